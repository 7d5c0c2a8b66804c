"""Plain value types of the esd client: expectations, events, results.

Design notes: a RecordedEvent wraps the protobuf message of its page and
decodes a field only when it is read (stream ids and types are UTF-8 bytes
on the wire; ids become uuid.UUID), so a replay that looks at three fields
of each event pays for three fields, not eleven. Results of other requests
are small and copied into frozen dataclasses whose fields follow the
schema.
"""

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "END",
    "AppendResult",
    "CaughtUp",
    "Erased",
    "Event",
    "Expected",
    "GroupState",
    "ParkedEvent",
    "RecordedEvent",
    "ServerInfo",
    "Snapshot",
    "Stats",
    "StreamDeleted",
    "StreamInfo",
    "StreamMetadata",
    "uuid7",
]

#: "From the end": a backward read from here starts at the last event.
END = (1 << 64) - 1


_pool = threading.local()


def _random10() -> int:
    # os.urandom in blocks of 4 KiB, one pool per thread: a syscall per
    # 409 ids instead of one per id.
    buf = getattr(_pool, "buf", b"")
    off = getattr(_pool, "off", 0)
    if off + 10 > len(buf):
        buf, off = os.urandom(4096), 0
        _pool.buf = buf
    _pool.off = off + 10
    return int.from_bytes(buf[off:off + 10], "big")


def uuid7() -> uuid.UUID:
    """A version 7 UUID: Unix time in milliseconds, then 74 random bits
    (from os.urandom)."""
    ms = time.time_ns() // 1_000_000
    rnd = _random10()
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rnd >> 62) & 0xFFF) << 64
    value |= 0x2 << 62
    value |= rnd & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class Expected:
    """An expectation on a stream's state, checked atomically by the server.

    Use the constants ANY, NO_STREAM, STREAM_EXISTS, or ``Expected.exact(r)``
    (a plain int r means the same where an expectation is taken).
    """

    ANY = 0
    NO_STREAM = 1
    STREAM_EXISTS = 2
    EXACT = 3
    _NAMES = {0: "ANY", 1: "NO_STREAM", 2: "STREAM_EXISTS", 3: "EXACT"}
    __slots__ = ("kind", "revision")

    def __init__(self, kind: int, revision: int = 0):
        if kind not in self._NAMES:
            raise ValueError(f"unknown expectation kind {kind}")
        if kind == self.EXACT and not 0 <= revision < END:
            raise ValueError(f"revision {revision} out of range")
        self.kind = kind
        self.revision = revision if kind == self.EXACT else 0

    @classmethod
    def exact(cls, revision: int) -> "Expected":
        """The stream's last revision must equal ``revision``."""
        return cls(cls.EXACT, revision)

    @classmethod
    def of(cls, value: Union["Expected", int, None]) -> "Expected":
        """Normalise an argument: an Expected, an int (exact revision) or None (ANY)."""
        if value is None:
            return ANY
        if isinstance(value, Expected):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("an expectation is an esd.Expected or an int revision")
        return cls.exact(value)

    def __eq__(self, other) -> bool:
        return isinstance(other, Expected) and (self.kind, self.revision) == (
            other.kind, other.revision)

    def __hash__(self) -> int:
        return hash((self.kind, self.revision))

    def __repr__(self) -> str:
        if self.kind == self.EXACT:
            return f"Expected.exact({self.revision})"
        return f"esd.{self._NAMES[self.kind]}"


#: No check.
ANY = Expected(Expected.ANY)
#: The stream must not exist yet.
NO_STREAM = Expected(Expected.NO_STREAM)
#: The stream must have at least one event.
STREAM_EXISTS = Expected(Expected.STREAM_EXISTS)

JSON = "application/json"


def _as_bytes(value: Any, what: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{what} must be bytes or str")


def _as_uuid(value: Any, what: str) -> Optional[uuid.UUID]:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    if isinstance(value, str):
        return uuid.UUID(value)
    raise TypeError(f"{what} must be a uuid.UUID, 16 bytes or a UUID string")


class Event:
    """An event proposed for appending.

    ``data`` is bytes, str (UTF-8) or any other value, which is encoded as
    compact JSON with content type application/json. ``id`` defaults to a
    fresh UUIDv7 drawn here, once: appending the same Event objects again
    after a lost connection is an idempotent retry (the server answers with
    the original result and ``duplicate=True``).
    """

    __slots__ = ("id", "type", "data", "metadata", "content_type", "correlation_id",
                 "causation_id")

    def __init__(self, type: str, data: Any = b"", *, metadata: Any = b"",
                 content_type: Optional[str] = None, id: Any = None,
                 correlation_id: Any = None, causation_id: Any = None):
        if not isinstance(type, str):
            raise TypeError("an event type is a str")
        self.type = type
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            self.data = _as_bytes(data, "data")
        else:
            self.data = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
            if content_type is None:
                content_type = JSON
        self.metadata = _as_bytes(metadata, "metadata")
        self.content_type = content_type or ""
        self.id = _as_uuid(id, "id") or uuid7()
        self.correlation_id = _as_uuid(correlation_id, "correlation_id")
        self.causation_id = _as_uuid(causation_id, "causation_id")

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id})"


class RecordedEvent:
    """A stored event, decoded lazily from its page (see the module notes).

    Attributes: stream (str), revision, position, id (uuid.UUID), type (str),
    data (bytes), metadata (bytes), content_type (str, "" when none),
    correlation_id / causation_id (uuid.UUID or None), recorded_at_us (µs
    since the epoch, server clock). ``json()`` decodes data as JSON.
    """

    __slots__ = ("_m",)

    def __init__(self, message):
        self._m = message

    @property
    def stream(self) -> str:
        """The stream id."""
        return self._m.stream.decode()

    @property
    def revision(self) -> int:
        """The event's revision in its stream (0-based)."""
        return self._m.revision

    @property
    def position(self) -> int:
        """The event's global position (1-based)."""
        return self._m.position

    @property
    def id(self) -> uuid.UUID:
        """The event id."""
        return uuid.UUID(bytes=self._m.id)

    @property
    def type(self) -> str:
        """The event type."""
        return self._m.type.decode()

    @property
    def data(self) -> bytes:
        """The payload."""
        return self._m.data

    @property
    def metadata(self) -> bytes:
        """The metadata."""
        return self._m.metadata

    @property
    def content_type(self) -> str:
        """The content type ("" when none was given)."""
        return self._m.content_type.decode()

    @property
    def correlation_id(self) -> Optional[uuid.UUID]:
        """The correlation id, or None."""
        b = self._m.correlation_id
        return uuid.UUID(bytes=b) if len(b) == 16 else None

    @property
    def causation_id(self) -> Optional[uuid.UUID]:
        """The causation id, or None."""
        b = self._m.causation_id
        return uuid.UUID(bytes=b) if len(b) == 16 else None

    @property
    def recorded_at_us(self) -> int:
        """When the server stored it: microseconds since the epoch."""
        return self._m.recorded_at_us

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self._m.data)

    def __repr__(self) -> str:
        return (f"RecordedEvent(stream={self.stream!r}, revision={self.revision}, "
                f"position={self.position}, type={self.type!r})")


class CaughtUp:
    """The marker of a subscription: history delivered, live events follow.

    ``position``: the global position the server had read to.
    """

    __slots__ = ("position",)

    def __init__(self, position: int):
        self.position = position

    def __repr__(self) -> str:
        return f"CaughtUp(position={self.position})"


@dataclass(frozen=True)
class AppendResult:
    """The outcome of one append: revisions and positions of its events;
    ``duplicate`` when it was an idempotent retry (nothing new stored);
    ``synced`` when the commit was fsynced before the reply."""

    first_revision: int
    last_revision: int
    first_position: int
    last_position: int
    duplicate: bool
    synced: bool

    @classmethod
    def _from(cls, m) -> "AppendResult":
        return cls(m.first_revision, m.last_revision, m.first_position, m.last_position,
                   m.duplicate, m.synced)


@dataclass(frozen=True)
class StreamInfo:
    """A stream's record: last revision, event count, first and last
    positions, creation and update times (µs since the epoch)."""

    stream: str
    last_revision: int
    event_count: int
    first_position: int
    last_position: int
    created_us: int
    updated_us: int

    @classmethod
    def _from(cls, m) -> "StreamInfo":
        return cls(m.stream.decode(), m.last_revision, m.event_count, m.first_position,
                   m.last_position, m.created_us, m.updated_us)


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: the revision its state reflects, the caller's
    state format, the data and when it was saved (µs since the epoch)."""

    stream: str
    revision: int
    state_format: int
    data: bytes
    saved_at_us: int

    @classmethod
    def _from(cls, m) -> "Snapshot":
        return cls(m.stream.decode(), m.revision, m.state_format, m.data, m.saved_at_us)


@dataclass(frozen=True)
class StreamDeleted:
    """The outcome of a delete or tombstone: the last revision deleted (a
    recreating append gets the one after); ``synced`` when the commit was
    fsynced before the reply."""

    last_revision: int
    synced: bool

    @classmethod
    def _from(cls, m) -> "StreamDeleted":
        return cls(m.last_revision, m.synced)


@dataclass(frozen=True)
class StreamMetadata:
    """A stream's lifecycle state. ``exists``: metadata was ever set, and
    then ``metadata_revision`` is its revision (0 for the first set). The
    retention limits, 0 meaning none: revisions below ``truncate_before``
    are not served, only the last ``max_count`` events are, only events
    younger than ``max_age`` seconds are. ``deleted``: soft-deleted with
    nothing appended since; revisions below ``deleted_before`` were
    deleted."""

    stream: str
    exists: bool
    metadata_revision: int
    truncate_before: int
    max_count: int
    max_age: int
    deleted: bool
    deleted_before: int

    @classmethod
    def _from(cls, m) -> "StreamMetadata":
        return cls(m.stream.decode(), m.exists, m.metadata_revision, m.truncate_before,
                   m.max_count, m.max_age_s, m.deleted, m.deleted_before)


class _Fields:
    """A read-only copy of every field of a protobuf message (by the
    schema's names, so it follows the schema)."""

    __slots__ = ("_d",)

    def __init__(self, message):
        d = {}
        for f in message.DESCRIPTOR.fields:
            v = getattr(message, f.name)
            if f.message_type is not None:
                v = _Fields(v)
            d[f.name] = v
        object.__setattr__(self, "_d", d)

    def __getattr__(self, name):
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def as_dict(self) -> dict:
        """The fields as a dict (nested messages as dicts)."""
        return {k: (v.as_dict() if isinstance(v, _Fields) else v) for k, v in self._d.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()!r})"


class Stats(_Fields):
    """Server statistics: every field of es.v1.Stats as an attribute
    (head_position, stream_count, event_count, connections, ...)."""


class ServerInfo(_Fields):
    """The server's HelloOk: protocol_version, server_version, limits
    (max_frame_bytes, max_events_per_append, max_event_bytes, max_page_size,
    max_in_flight, max_appends_per_transaction), sync_mode (0 full, 1 none),
    store_id (bytes), role."""


@dataclass(frozen=True)
class Erased:
    """The outcome of an erasure: when the key was destroyed (µs since the
    epoch, the first time), whether it ``already`` had been (nothing
    changed), and how many ``streams`` went with it."""

    erased_at_us: int
    already: bool
    streams: int

    @classmethod
    def _from(cls, m) -> "Erased":
        return cls(m.erased_at_us, m.already, m.streams)


_TARGETS = {0: "all", 1: "stream", 2: "category", 3: "event_type", 4: "stream_prefix"}


@dataclass(frozen=True)
class GroupState:
    """A consumer group: its target (``target`` is "all", "stream",
    "category", "event_type" or "stream_prefix", ``target_name`` the name),
    its settings, its ``checkpoint`` (every matching event at or below it is
    acknowledged, skipped or parked), ``lag`` (head position - checkpoint),
    ``members``, events ``in_flight`` and ``parked`` now, and the events
    ``acked`` and ``retries`` since the server started."""

    name: str
    target: str
    target_name: str
    checkpoint: int
    lag: int
    head_position: int
    members: int
    in_flight: int
    parked: int
    acked: int
    retries: int
    ack_timeout_ms: int
    max_retries: int
    park_blocks: bool
    max_in_flight: int

    @classmethod
    def _from(cls, m) -> "GroupState":
        s = m.settings
        return cls(m.name.decode(), _TARGETS.get(m.target, str(m.target)),
                   m.target_name.decode(), m.checkpoint, m.lag, m.head_position, m.members,
                   m.in_flight, m.parked, m.acked, m.retries, s.ack_timeout_ms, s.max_retries,
                   s.park_blocks, s.max_in_flight)


@dataclass(frozen=True)
class ParkedEvent:
    """An event a group parked: its position and stream, how many times it
    was delivered (``attempts``), why, and when (µs since the epoch)."""

    position: int
    stream: str
    attempts: int
    reason: str
    parked_at_us: int

    @classmethod
    def _from(cls, m) -> "ParkedEvent":
        return cls(m.position, m.stream.decode(errors="replace"), m.attempts, m.reason,
                   m.parked_at_us)
