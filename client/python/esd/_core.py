"""What the blocking and the asyncio clients share: options, addresses,
request building, reply checking, the resilience policy.

Design notes:

- Requests are es.v1.Request messages built here; a reply is checked
  against the kind its request expects (an Error becomes the exception of
  its code, carrying the conflicts; another kind is MalformedError).
- Backoff ("full jitter"): the delay before retry k (k = 0 for the first
  retry) is uniform in [0, min(max, initial * 2**k)].
- Circuit breaker: counts consecutive failed connection attempts (a request
  that fails on a healthy connection is the server's answer, not a failure
  of the connection). CLOSED -> OPEN after ``threshold`` failures; OPEN
  refuses every attempt (CircuitOpenError, without touching the network)
  until ``reset`` seconds have passed since it opened; then it admits
  exactly one trial (HALF_OPEN): success closes it, failure re-opens it. A
  threshold of 0 disables it. A Hello refused for a reason retrying cannot
  fix (credentials, protocol version) ends the call at once and does not
  count: the server is up. This is libesclient's policy, number for number.
"""

import datetime
import os
import random
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from . import errors
from ._pb import pb
from .types import END, Event, Expected, ServerInfo

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7400
DEFAULT_ADDRESS = "127.0.0.1:7400"
HEADER = struct.Struct(">I")
#: Frame cap before the Hello states the server's (as the C client).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HARD_MAX_FRAME = 64 * 1024 * 1024
DEFAULT_IN_FLIGHT = 64
TOKEN_MAX_BYTES = 1024
#: Queued push bytes of one subscription beyond its first batch.
SUB_QUEUE_BYTES = 4 * 1024 * 1024

PUSH_KINDS = frozenset(("events", "caught_up", "dropped", "group_events", "group_left",
                        "group_revoked"))

BREAKER_CLOSED = "closed"
BREAKER_OPEN = "open"
BREAKER_HALF_OPEN = "half_open"

TARGET_ALL = 0
TARGET_STREAM = 1
TARGET_CATEGORY = 2
TARGET_EVENT_TYPE = 3
TARGET_STREAM_PREFIX = 4

_REFUSALS = (errors.UnauthenticatedError, errors.PermissionDeniedError,
             errors.UnsupportedVersionError, errors.InvalidArgumentError,
             errors.NoMemoryError)


#: Errors after which a subscription or a group member tries again (the
#: connection or the server's state may recover); any other ends it.
TRANSIENT = (errors.ClosedError, errors.TimeoutError, errors.ConnectionError,
             errors.CircuitOpenError, errors.ShuttingDownError, errors.BusyError,
             errors.NoMemoryError, errors.TooManyRequestsError, errors.IOError,
             errors.InternalError, errors.MalformedError, errors.TooLargeError)


def is_refusal(exc: BaseException) -> bool:
    """A Hello refused for a reason that retrying cannot fix."""
    return isinstance(exc, _REFUSALS)


@dataclass
class Options:
    """The options of a client (see Client for their meaning)."""

    host: str
    port: int
    address: str
    client_name: str
    user: str
    token: bytes
    connect_timeout: float
    request_timeout: float
    reconnect_attempts: int
    backoff_initial: float
    backoff_max: float
    breaker_threshold: int
    breaker_reset: float
    max_in_flight: int
    max_frame_bytes: int
    max_pending: int
    ssl_context: Optional[ssl.SSLContext]
    server_hostname: Optional[str]


def parse_address(address: str) -> Tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT' or 'HOST' (port 7400) -> (host, port)."""
    if not isinstance(address, str) or not address:
        raise errors.InvalidArgumentError("an address is 'HOST:PORT'")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise errors.InvalidArgumentError(f"bad address {address!r}")
        host, rest = address[1:end], address[end + 1:]
        if rest == "":
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise errors.InvalidArgumentError(f"bad address {address!r}")
        port_s = rest[1:]
    elif address.count(":") == 1:
        host, port_s = address.split(":")
    elif ":" in address:
        return address, DEFAULT_PORT  # a bare IPv6 address
    else:
        return address, DEFAULT_PORT
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise errors.InvalidArgumentError(f"bad address {address!r}")
    return host, int(port_s)


def read_token_file(path: str) -> bytes:
    """The token in a file: its content without surrounding whitespace
    (a file written by echo works); 1..1024 bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read(TOKEN_MAX_BYTES + 64)
    except OSError as e:
        raise errors.InvalidArgumentError(
            f"cannot read the token file {path}: {e.strerror}") from None
    tok = raw.strip(b" \t\r\n")
    if not tok:
        raise errors.InvalidArgumentError(f"the token file {path} is empty")
    if len(tok) > TOKEN_MAX_BYTES or len(raw) > TOKEN_MAX_BYTES + 63:
        raise errors.InvalidArgumentError(
            f"the token in {path} is longer than {TOKEN_MAX_BYTES} bytes")
    return tok


def make_options(address, *, client_name, user, token, token_file, tls, tls_ca_file,
                 tls_server_name, tls_insecure, connect_timeout, request_timeout,
                 reconnect_attempts, backoff_initial, backoff_max, breaker_threshold,
                 breaker_reset, max_in_flight, max_frame_bytes, max_pending) -> Options:
    """Check and normalise the constructor arguments of a client."""
    host, port = parse_address(address)
    if token is not None and token_file is not None:
        raise errors.InvalidArgumentError("give a token or a token file, not both")
    if token_file is not None:
        token = read_token_file(token_file)
    if isinstance(token, str):
        token = token.encode()
    token = bytes(token or b"")
    if len(token) > TOKEN_MAX_BYTES:
        raise errors.InvalidArgumentError(f"a token is at most {TOKEN_MAX_BYTES} bytes")
    for name, v in (("connect_timeout", connect_timeout), ("request_timeout", request_timeout)):
        if not v > 0:
            raise errors.InvalidArgumentError(f"{name} must be > 0")
    if reconnect_attempts < 1 or backoff_initial < 0 or backoff_max < backoff_initial:
        raise errors.InvalidArgumentError(
            "reconnect_attempts >= 1 and 0 <= backoff_initial <= backoff_max")
    if breaker_threshold < 0 or breaker_reset < 0 or max_in_flight < 0 or max_pending < 1:
        raise errors.InvalidArgumentError("negative limits")
    if not 0 <= max_frame_bytes <= HARD_MAX_FRAME:
        raise errors.InvalidArgumentError(f"max_frame_bytes is at most {HARD_MAX_FRAME}")
    ctx = None
    if tls or tls_insecure or tls_ca_file is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            if tls_ca_file is not None:
                ctx.load_verify_locations(cafile=tls_ca_file)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as e:
            raise errors.InvalidArgumentError(
                f"cannot load the CA certificates {tls_ca_file or 'of the system'}: {e}"
            ) from None
    return Options(host=host, port=port, address=address, client_name=client_name,
                   user=user or "", token=token, connect_timeout=float(connect_timeout),
                   request_timeout=float(request_timeout),
                   reconnect_attempts=int(reconnect_attempts),
                   backoff_initial=float(backoff_initial), backoff_max=float(backoff_max),
                   breaker_threshold=int(breaker_threshold), breaker_reset=float(breaker_reset),
                   max_in_flight=int(max_in_flight), max_frame_bytes=int(max_frame_bytes),
                   max_pending=int(max_pending), ssl_context=ctx,
                   server_hostname=(tls_server_name or host) if ctx else None)


def backoff_delay(initial: float, maximum: float, attempt: int, rnd: random.Random) -> float:
    """The full-jitter delay before retry number ``attempt`` (0-based)."""
    window = initial
    for _ in range(attempt):
        if window >= maximum:
            break
        window *= 2
    return rnd.uniform(0, min(window, maximum))


class Breaker:
    """The circuit breaker (see the module notes); ``now`` is a monotonic clock."""

    def __init__(self, threshold: int, reset: float):
        self.threshold = threshold
        self.reset = reset
        self.failures = 0
        self.state = BREAKER_CLOSED
        self.opened_at = 0.0

    def allow(self, now: float) -> Tuple[bool, float]:
        """May an attempt be made now? (allowed, seconds until the trial)."""
        if self.state != BREAKER_OPEN:
            return True, 0.0
        until = self.opened_at + self.reset
        if now >= until:
            self.state = BREAKER_HALF_OPEN
            return True, 0.0
        return False, until - now

    def on_success(self) -> None:
        """A connection attempt succeeded (or was refused by a live server)."""
        self.failures = 0
        self.state = BREAKER_CLOSED

    def on_failure(self, now: float) -> bool:
        """A connection attempt failed; True when the circuit is now open."""
        self.failures += 1
        if self.threshold == 0:
            return False
        if self.state == BREAKER_HALF_OPEN or self.failures >= self.threshold:
            self.state = BREAKER_OPEN
            self.opened_at = now
            return True
        return False


# ------------------------------------------------------------ requests --

def hello_request(o: Options) -> "pb.Request":
    """The Hello of a connection."""
    r = pb.Request()
    h = r.hello
    h.protocol_version = PROTOCOL_VERSION
    h.client_name = o.client_name
    h.user = o.user
    h.token = o.token
    return r


def _stream_bytes(stream: str) -> bytes:
    if not isinstance(stream, str):
        raise TypeError("a stream id is a str")
    return stream.encode()


def fill_append(a, stream: str, expected, events: Iterable[Event], limits) -> int:
    """Fill an es.v1.Append; returns the number of events."""
    a.stream = _stream_bytes(stream)
    exp = Expected.of(expected)
    if exp.kind:
        a.expected.kind = exp.kind
        a.expected.revision = exp.revision
    n = 0
    add = a.events.add
    for e in events:
        if not isinstance(e, Event):
            raise TypeError("events are esd.Event objects")
        p = add()
        p.id = e.id.bytes
        p.type = e.type.encode()
        if e.data:
            p.data = e.data
        if e.metadata:
            p.metadata = e.metadata
        if e.content_type:
            p.content_type = e.content_type.encode()
        if e.correlation_id is not None:
            p.correlation_id = e.correlation_id.bytes
        if e.causation_id is not None:
            p.causation_id = e.causation_id.bytes
        n += 1
    if n == 0:
        raise errors.InvalidArgumentError("an append needs at least one event")
    cap = limits.max_events_per_append if limits is not None else 0
    if cap and n > cap:
        raise errors.TooManyEventsError(
            f"{n} events in one append; the server accepts at most {cap}")
    return n


def append_request(stream, expected, events, limits, subject=None) -> "pb.Request":
    """An Append request (``subject``: the data subject of a new stream)."""
    r = pb.Request()
    fill_append(r.append, stream, expected, events, limits)
    if subject is not None:
        if not isinstance(subject, str) or not subject:
            raise errors.InvalidArgumentError("a subject is a non-empty str")
        r.append.subject = subject.encode()
    return r


def transaction_request(appends, limits) -> "pb.Request":
    """A Transaction over (stream, expected, events) triples."""
    r = pb.Request()
    t = r.transaction
    n = 0
    for item in appends:
        try:
            stream, expected, events = item
        except (TypeError, ValueError):
            raise TypeError("a transaction takes (stream, expected, events) triples") from None
        fill_append(t.appends.add(), stream, expected, events, limits)
        n += 1
    if n == 0:
        raise errors.InvalidArgumentError("a transaction needs at least one append")
    cap = limits.max_appends_per_transaction if limits is not None else 0
    if cap and n > cap:
        raise errors.InvalidArgumentError(
            f"{n} appends in one transaction; the server accepts at most {cap}")
    return r


def read_stream_request(stream: str, frm: int, backward: bool, limit: int) -> "pb.Request":
    """A ReadStream request for one page."""
    r = pb.Request()
    m = r.read_stream
    m.stream = _stream_bytes(stream)
    m.from_revision = frm
    m.backward = backward
    m.limit = limit
    return r


def filter_of(category, event_type, stream_prefix) -> Tuple[str, bytes]:
    """The filter of a global read: (field name, value) or ("", b"")."""
    given = [(k, v) for k, v in (("category", category), ("event_type", event_type),
                                 ("stream_prefix", stream_prefix)) if v is not None]
    if len(given) > 1:
        raise errors.InvalidArgumentError("at most one filter at a time")
    if not given:
        return "", b""
    k, v = given[0]
    if not isinstance(v, str) or not v:
        raise errors.InvalidArgumentError("a filter needs a non-empty name")
    return k, v.encode()


def read_all_request(frm: int, backward: bool, limit: int, flt) -> "pb.Request":
    """A ReadAll request for one page."""
    r = pb.Request()
    m = r.read_all
    m.from_position = frm
    m.backward = backward
    m.limit = limit
    if flt[0]:
        setattr(m.filter, flt[0], flt[1])
    return r


def subscribe_target(stream, category, event_type, stream_prefix) -> Tuple[int, bytes]:
    """(target, name) of a subscription; none given = the whole log."""
    given = [(t, v) for t, v in ((TARGET_STREAM, stream), (TARGET_CATEGORY, category),
                                 (TARGET_EVENT_TYPE, event_type),
                                 (TARGET_STREAM_PREFIX, stream_prefix)) if v is not None]
    if len(given) > 1:
        raise errors.InvalidArgumentError(
            "subscribe to one of stream, category, event_type or stream_prefix")
    if not given:
        return TARGET_ALL, b""
    t, v = given[0]
    if not isinstance(v, str) or not v:
        raise errors.InvalidArgumentError("a subscription target needs a non-empty name")
    return t, v.encode()


def subscribe_request(target: int, name: bytes, last: Optional[int], from_end: bool,
                      batch_size: int) -> "pb.Request":
    """A Subscribe strictly after ``last`` (or from the start / the end)."""
    r = pb.Request()
    s = r.subscribe
    s.target = target
    s.name = name
    s.batch_size = batch_size
    if last is not None:
        s.after = last
    elif from_end:
        s.from_end = True
    else:
        s.from_start = True
    return r


def simple_request(kind: str, **fields) -> "pb.Request":
    """A request whose message has only scalar fields."""
    r = pb.Request()
    m = getattr(r, kind)
    m.SetInParent()
    for k, v in fields.items():
        setattr(m, k, v)
    return r


def list_streams_request(prefix: str, after: str, limit: int) -> "pb.Request":
    """A ListStreams request for one page."""
    return simple_request("list_streams", prefix=prefix.encode(), after=after.encode(),
                          limit=limit)


def _set_expected(m, expected) -> None:
    exp = Expected.of(expected)
    if exp.kind:
        m.kind = exp.kind
        m.revision = exp.revision


def delete_request(kind: str, stream: str, expected) -> "pb.Request":
    """A DeleteStream or TombstoneStream request (kind "delete_stream" or
    "tombstone_stream")."""
    r = pb.Request()
    m = getattr(r, kind)
    m.stream = _stream_bytes(stream)
    _set_expected(m.expected, expected)
    return r


def _limit(value, what: str) -> int:
    """A retention limit: None or 0 for none, else a non-negative int (max_age
    may be a datetime.timedelta: its whole seconds)."""
    if value is None:
        return 0
    if what == "max_age" and isinstance(value, datetime.timedelta):
        if value < datetime.timedelta(0):
            raise errors.InvalidArgumentError("max_age is negative")
        return int(value.total_seconds())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is an int" + (" (seconds) or a datetime.timedelta"
                                               if what == "max_age" else ""))
    if not 0 <= value < END:
        raise errors.InvalidArgumentError(f"{what} {value} out of range")
    return value


def set_metadata_request(stream: str, expected_metadata_revision, truncate_before,
                         max_count, max_age) -> "pb.Request":
    """A SetStreamMetadata request; a limit of None is 0 (no limit)."""
    r = pb.Request()
    m = r.set_stream_metadata
    m.stream = _stream_bytes(stream)
    _set_expected(m.expected_metadata_revision, expected_metadata_revision)
    m.truncate_before = _limit(truncate_before, "truncate_before")
    m.max_count = _limit(max_count, "max_count")
    m.max_age_s = _limit(max_age, "max_age")
    return r


def erase_stream_request(stream: str, expected, force: bool) -> "pb.Request":
    """An EraseStream request: the confirmation is an exact revision or
    STREAM_EXISTS in ``expected``, or ``force``."""
    if expected is None and not force:
        raise errors.InvalidArgumentError(
            "an erasure cannot be undone: give expected (the last revision you checked) "
            "or force=True")
    r = pb.Request()
    m = r.erase_stream
    m.stream = _stream_bytes(stream)
    if expected is not None:
        _set_expected(m.expected, expected)
    m.force = bool(force)
    return r


def erase_subject_request(subject: str, force: bool) -> "pb.Request":
    """An EraseSubject request (``force`` is the confirmation)."""
    if not force:
        raise errors.InvalidArgumentError("an erasure cannot be undone: give force=True")
    if not isinstance(subject, str) or not subject:
        raise errors.InvalidArgumentError("a subject is a non-empty str")
    r = pb.Request()
    r.erase_subject.subject = subject.encode()
    r.erase_subject.force = True
    return r


def _group_name(name: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgumentError("a group name is a non-empty str")
    return name.encode()


def _u32(value, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 32):
        raise errors.InvalidArgumentError(f"{what} {value!r} out of range")
    return value


def _fill_settings(st, ack_timeout_ms, max_retries, park_blocks, max_in_flight) -> None:
    """GroupSettings; None (or 0) leaves a field to the server's default
    (max_retries None is 10, 0 means no retries)."""
    st.ack_timeout_ms = _u32(ack_timeout_ms, "ack_timeout_ms")
    st.max_retries = 10 if max_retries is None else _u32(max_retries, "max_retries")
    st.park_blocks = bool(park_blocks)
    st.max_in_flight = _u32(max_in_flight, "max_in_flight")


def create_group_request(name: str, target: int, target_name: bytes, last: Optional[int],
                         from_end: bool, settings: dict) -> "pb.Request":
    """A CreateGroup request (start: after ``last``, from the end, or the start)."""
    r = pb.Request()
    m = r.create_group
    m.name = _group_name(name)
    m.target = target
    m.target_name = target_name
    if last is not None:
        m.after = last
    elif from_end:
        m.from_end = True
    else:
        m.from_start = True
    _fill_settings(m.settings, **settings)
    return r


def update_group_request(name: str, settings: dict) -> "pb.Request":
    """An UpdateGroup request: every setting replaces the stored one."""
    r = pb.Request()
    r.update_group.name = _group_name(name)
    _fill_settings(r.update_group.settings, **settings)
    return r


def group_name_request(kind: str, name: str) -> "pb.Request":
    """DeleteGroup, GroupInfoRequest or ReplayParked: the name only."""
    r = pb.Request()
    getattr(r, kind).name = _group_name(name)
    return r


def list_parked_request(name: str, after: int, limit: int) -> "pb.Request":
    """A ListParked request for one page."""
    r = pb.Request()
    m = r.list_parked
    m.name = _group_name(name)
    m.after = after
    m.limit = _u32(limit, "limit")
    return r


def join_group_request(name: str, max_in_flight: int, consumer: str) -> "pb.Request":
    """A JoinGroup request."""
    r = pb.Request()
    m = r.join_group
    m.name = _group_name(name)
    m.max_in_flight = _u32(max_in_flight, "max_in_flight")
    m.consumer = consumer
    return r


NACK_ACTIONS = {"retry": 0, "park": 1, "skip": 2}


def settle_request(join_id: int, positions: List[int], action: Optional[str],
                   reason: str) -> "pb.Request":
    """A GroupAck (action None) or GroupNack of the given positions."""
    if not positions:
        raise errors.InvalidArgumentError("give at least one position")
    r = pb.Request()
    if action is None:
        m = r.group_ack
    else:
        if action not in NACK_ACTIONS:
            raise errors.InvalidArgumentError(
                f"a nack's action is one of {', '.join(NACK_ACTIONS)}, not {action!r}")
        m = r.group_nack
        m.action = NACK_ACTIONS[action]
        m.reason = reason
    m.join_id = join_id
    m.positions.extend(positions)
    return r


def get_metadata_request(stream: str) -> "pb.Request":
    """A GetStreamMetadata request."""
    r = pb.Request()
    r.get_stream_metadata.stream = _stream_bytes(stream)
    return r


# ------------------------------------------------------------- replies --

REPLY_KIND = {
    "hello": "hello", "append": "append", "transaction": "transaction",
    "read_stream": "read", "read_all": "read", "subscribe": "subscribed",
    "unsubscribe": "unsubscribed", "stream_info": "stream_info", "list_streams": "streams",
    "save_snapshot": "snapshot_saved", "load_snapshot": "snapshot", "stats": "stats",
    "ping": "pong", "delete_stream": "stream_deleted", "tombstone_stream": "stream_deleted",
    "set_stream_metadata": "stream_metadata", "get_stream_metadata": "stream_metadata",
    "erase_stream": "erased", "erase_subject": "erased",
    "create_group": "group_done", "update_group": "group_done", "delete_group": "group_done",
    "list_groups": "groups", "group_info": "group_state", "join_group": "group_joined",
    "group_ack": "group_done", "group_nack": "group_done", "list_parked": "parked",
    "replay_parked": "group_done",
}


def conflicts_of(err) -> List[errors.Conflict]:
    """The failed checks of an es.v1.Error."""
    out = []
    for fc in err.conflicts:
        kind = fc.expected.kind
        exp = Expected(kind, fc.expected.revision) if kind in (0, 1, 2, 3) else None
        out.append(errors.Conflict(
            stream=fc.stream.decode(errors="replace"), expected=exp,
            actual_exists=fc.actual.exists,
            actual_revision=fc.actual.revision if fc.actual.exists else None))
    return out


def error_of(err) -> errors.EsdError:
    """The exception of an es.v1.Error."""
    return errors.make_error(err.code, err.message, conflicts_of(err))


def check_reply(resp, request_kind: str):
    """The reply's message of the expected kind; raises the error it carries."""
    kind = resp.WhichOneof("kind")
    if kind == REPLY_KIND[request_kind]:
        return getattr(resp, kind)
    if kind == "error":
        raise error_of(resp.error)
    raise errors.MalformedError(f"the server answered a {request_kind} with {kind}")


def frame(req) -> bytes:
    """A request as a frame: 4-byte big-endian length + the message."""
    body = req.SerializeToString()
    return HEADER.pack(len(body)) + body


def clamp_frame(v: int) -> int:
    """A frame cap: 0 -> the default, never above the hard maximum."""
    if v == 0:
        return DEFAULT_MAX_FRAME
    return min(v, HARD_MAX_FRAME)


def resolve_start(from_start: bool, after: Optional[int], from_end: bool):
    """Check the start of a subscription; returns (last, from_end)."""
    if sum((bool(from_start), after is not None, bool(from_end))) > 1:
        raise errors.InvalidArgumentError("give one of from_start, after, from_end")
    if after is not None:
        if not isinstance(after, int) or not 0 <= after < END:
            raise errors.InvalidArgumentError(f"nothing lies after {after}")
        return after, False
    return None, bool(from_end)


def seed() -> random.Random:
    """A random generator for the jitter (different per client)."""
    return random.Random(int.from_bytes(os.urandom(8), "big"))


class ClientBase:
    """The state the blocking client (esd.Client) and the asyncio client
    (esd.aio.Client) share: the options, the circuit breaker, request ids,
    the frame caps and the last handshake. The keyword arguments are
    documented on esd.Client. A subclass adds its transport's state in
    _init_transport, which runs at the end of __init__; no I/O happens here.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, client_name: str = "esd-python",
                 user: Optional[str] = None, token=None, token_file: Optional[str] = None,
                 tls: bool = False, tls_ca_file: Optional[str] = None,
                 tls_server_name: Optional[str] = None, tls_insecure: bool = False,
                 connect_timeout: float = 5.0, request_timeout: float = 30.0,
                 reconnect_attempts: int = 4, backoff_initial: float = 0.1,
                 backoff_max: float = 5.0, breaker_threshold: int = 5,
                 breaker_reset: float = 10.0, max_in_flight: int = 0,
                 max_frame_bytes: int = 0, max_pending: int = 65536):
        self._o = make_options(
            address, client_name=client_name, user=user, token=token, token_file=token_file,
            tls=tls, tls_ca_file=tls_ca_file, tls_server_name=tls_server_name,
            tls_insecure=tls_insecure, connect_timeout=connect_timeout,
            request_timeout=request_timeout, reconnect_attempts=reconnect_attempts,
            backoff_initial=backoff_initial, backoff_max=backoff_max,
            breaker_threshold=breaker_threshold, breaker_reset=breaker_reset,
            max_in_flight=max_in_flight, max_frame_bytes=max_frame_bytes,
            max_pending=max_pending)
        self._breaker = Breaker(self._o.breaker_threshold, self._o.breaker_reset)
        self._rng = seed()
        self._ready = False
        self._epoch = 0
        self._next_id = 0
        self._pending = {}
        self._inflight_cap = 1
        self._reset_limits()
        self._out = bytearray()
        self._subs = {}  # Subscribe request id -> Subscription
        self._info = None
        self.clock = time.monotonic  #: replaceable, for tests of the breaker
        self._init_transport()

    def _init_transport(self) -> None:
        raise NotImplementedError

    @property
    def server_info(self) -> Optional[ServerInfo]:
        """The server's HelloOk of the last handshake (None before one)."""
        return self._info

    @property
    def breaker_state(self) -> str:
        """"closed", "open" or "half_open"."""
        return self._breaker.state

    def _drop(self, exc: errors.EsdError) -> None:
        raise NotImplementedError

    def _reset_limits(self) -> None:
        """The caps before a handshake: the client's own, one request in flight."""
        self._recv_cap = clamp_frame(self._o.max_frame_bytes)
        self._send_cap = DEFAULT_MAX_FRAME
        self._inflight_cap = 1
        self._notice = ""

    def _hello_error(self, e: errors.EsdError) -> errors.EsdError:
        """What a failed Hello raises: a lost or silent connection is a
        ConnectionError (retried); a refusal is raised as it is."""
        if isinstance(e, (errors.ClosedError, errors.TimeoutError)):
            return errors.ConnectionError(f"hello failed: {e.message}")
        return e

    def _accept_hello(self, ok) -> None:
        """Check the HelloOk and take the server's limits; the connection is ready."""
        if ok.protocol_version != PROTOCOL_VERSION:
            self._drop(errors.ClosedError("unsupported protocol version"))
            raise errors.UnsupportedVersionError(
                f"the server speaks protocol version {ok.protocol_version}, this library "
                f"{PROTOCOL_VERSION}")
        self._info = ServerInfo(ok)
        lim = ok.limits
        self._send_cap = clamp_frame(lim.max_frame_bytes)
        self._recv_cap = clamp_frame(self._o.max_frame_bytes or lim.max_frame_bytes)
        caps = [c for c in (self._o.max_in_flight, lim.max_in_flight) if c]
        self._inflight_cap = min(caps) if caps else DEFAULT_IN_FLIGHT
        self._ready = True
        self._epoch += 1
