"""The blocking client of esd (esd.Client).

Design notes:

- One TCP (or TLS) connection, used by one thread at a time, speaking es.v1
  (proto/es/v1/es.proto): 4-byte big-endian length + one protobuf message.
- Pipelining: every request gets the next id of a client-wide counter
  (never reused, so a reply from a dropped connection can never match a
  request on a new one) and is queued in an output buffer that is written
  when 64 KiB are queued or when any reply is waited for. Replies are
  matched to their requests by id, in any order. At most max_in_flight
  requests are unanswered (the server's limit from its HelloOk, or the
  client's if lower); beyond that the sender first reads replies.
- Frames are read in chunks; a header is checked against the receive cap
  before the body is awaited, and a frame that breaks it drops the
  connection (the byte stream can no longer be trusted).
- A request not answered within request_timeout of being sent raises
  TimeoutError and drops the connection (a peer that stopped answering
  cannot be told from a dead one); the other requests in flight then fail
  with ClosedError, and the next call reconnects.
- Connecting: up to reconnect_attempts attempts, each TCP connect + TLS +
  Hello within connect_timeout, with full-jitter backoff between them,
  each subject to the circuit breaker (esd._core).
- Subscription pushes carry the id of their Subscribe; whichever call reads
  the connection queues them on their subscription, and they are handed to
  the caller only by that subscription's own iteration.
"""

import select
import socket
import ssl
import time
from collections import deque
from typing import Iterable, Iterator, List, Optional

from . import _core as core
from . import errors
from ._pb import pb
from .group import GroupMember
from .types import (END, AppendResult, CaughtUp, Erased, Event, GroupState, ParkedEvent,
                    RecordedEvent, Snapshot, Stats, StreamDeleted, StreamInfo, StreamMetadata)

__all__ = ["Client", "PendingAppend", "Subscription"]

_FLUSH_BYTES = 64 * 1024
_RECV_BYTES = 256 * 1024
_WAITING = object()
_READ_RESUMES = 2


class PendingAppend:
    """An append sent by Client.append_async: ``result()`` waits for it."""

    __slots__ = ("_client", "_id", "_conv", "_result", "_done", "__weakref__")

    def __init__(self, client: "Client", req_id: int, conv):
        self._client = client
        self._id = req_id
        self._conv = conv
        self._result = None
        self._done = False

    @property
    def request_id(self) -> int:
        """The id of the request on the wire."""
        return self._id

    def result(self):
        """The AppendResult (or TransactionResult list), waiting for the reply
        if needed; raises the request's error."""
        if not self._done:
            resp = self._client._wait(self._id)
            self._result = self._conv(resp)
            self._done = True
        return self._result

    def __del__(self):
        if not self._done:
            try:
                self._client._abandon(self._id)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


class Client(core.ClientBase):
    """A blocking connection to esd.

    Arguments (all keyword-only except address):

    - address: "HOST:PORT", "[IPv6]:PORT" or "HOST" (port 7400).
    - user, token (bytes/str) or token_file (a file holding the token and at
      most surrounding whitespace): credentials of the Hello.
    - tls: TLS 1.2+ verified against the system's CAs; tls_ca_file: a PEM
      file of CAs instead (implies tls); tls_server_name: the name the
      certificate must carry (default: the host of address); tls_insecure:
      no verification (tests only).
    - connect_timeout (s, connect + Hello, default 5), request_timeout (s,
      default 30).
    - reconnect_attempts (per call, default 4), backoff_initial (0.1 s),
      backoff_max (5 s), breaker_threshold (5; 0 disables),
      breaker_reset (10 s): see esd._core for the policy.
    - max_in_flight (0 = the server's), max_frame_bytes (0 = the
      server's), max_pending (uncollected append_async results, 65536).

    No I/O happens here: the first call (or connect()) connects. Use as a
    context manager to close it.
    """

    def _init_transport(self) -> None:
        # self._pending: id -> _WAITING | Response | EsdError
        self._sock = None
        self._deadlines = {}  # id -> monotonic deadline
        self._abandoned = set()
        self._in_flight = 0
        self._in = bytearray()
        self.sleep = time.sleep  #: replaceable, for tests of the backoff

    # ------------------------------------------------------ the connection --

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    @property
    def connected(self) -> bool:
        """Whether the client holds a connection that completed the Hello."""
        return self._ready and self._sock is not None

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet."""
        return self._in_flight

    def connect(self) -> None:
        """Connect and do the Hello now (if not connected yet).

        Raises ConnectionError (every attempt failed), CircuitOpenError
        (nothing attempted), UnauthenticatedError / PermissionDeniedError /
        UnsupportedVersionError (retrying will not help)."""
        self._ensure()

    def close(self) -> None:
        """Drop the connection; requests in flight fail with ClosedError. The
        next call reconnects."""
        if self._sock is not None:
            self._drop(errors.ClosedError("the client closed the connection"))

    def _drop(self, exc: errors.EsdError) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:  # pragma: no cover
                pass
        self._sock = None
        self._ready = False
        self._in.clear()
        self._out.clear()
        if self._notice:
            exc = type(exc)(f"{exc.message} (server said: {self._notice})")
        for rid, v in self._pending.items():
            if v is _WAITING:
                self._pending[rid] = exc
        for rid in self._abandoned:
            self._pending.pop(rid, None)
        self._abandoned.clear()
        self._deadlines.clear()
        self._in_flight = 0

    def _ensure(self) -> None:
        if self._sock is not None and self._ready:
            if self._in_flight:
                return  # a lost connection shows when the replies are awaited
            # Notice a connection the server closed while we were idle.
            self._pump(0.0)
            if self._sock is not None:
                return
        attempts = self._o.reconnect_attempts
        made = 0
        cause = ""
        for a in range(attempts):
            if a > 0:
                self.sleep(core.backoff_delay(self._o.backoff_initial, self._o.backoff_max,
                                              a - 1, self._rng))
            ok, wait = self._breaker.allow(self.clock())
            if not ok:
                if made == 0:
                    raise errors.CircuitOpenError(
                        f"circuit breaker open after {self._breaker.failures} consecutive "
                        f"connection failures; next trial in {wait * 1000:.0f} ms")
                break
            made += 1
            try:
                self._connect_once()
            except errors.EsdError as e:
                if core.is_refusal(e):
                    self._breaker.on_success()
                    raise
                cause = e.message
                if self._breaker.on_failure(self.clock()):
                    break
                continue
            self._breaker.on_success()
            return
        tail = "; circuit breaker now open" if self._breaker.state == core.BREAKER_OPEN else ""
        raise errors.ConnectionError(
            f"cannot connect to {self._o.address}: {cause} ({made} attempt"
            f"{'' if made == 1 else 's'}{tail})")

    def _connect_once(self) -> None:
        o = self._o
        deadline = time.monotonic() + o.connect_timeout
        self._reset_limits()
        self._ready = False
        try:
            sock = socket.create_connection((o.host, o.port), timeout=o.connect_timeout)
        except OSError as e:
            raise errors.ConnectionError(e.strerror or str(e)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if o.ssl_context is not None:
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = o.ssl_context.wrap_socket(sock, server_hostname=o.server_hostname)
            except ssl.SSLCertVerificationError as e:
                sock.close()
                raise errors.ConnectionError(
                    f"TLS handshake with {o.address} failed: the server's certificate is not "
                    f"trusted for \"{o.server_hostname}\": {e.verify_message}") from None
            except (OSError, ssl.SSLError) as e:
                sock.close()
                raise errors.ConnectionError(
                    f"TLS handshake with {o.address} failed: {e}") from None
        self._sock = sock
        try:
            rid = self._submit(core.hello_request(o), deadline=deadline)
            resp = self._wait(rid)
            ok = core.check_reply(resp, "hello")
        except errors.EsdError as e:
            if self._sock is not None:
                self._drop(errors.ClosedError("hello refused"))
            raise self._hello_error(e) from None
        self._accept_hello(ok)

    # ----------------------------------------------------------- frames --

    def _submit(self, req, deadline: Optional[float] = None) -> int:
        """Queue a request (connected); returns its id."""
        if self._sock is None:
            raise errors.ClosedError("not connected")
        rid = self._next_id + 1
        req.id = rid
        body = req.SerializeToString()
        if len(body) > self._send_cap:
            raise errors.TooLargeError(
                f"request of {len(body)} bytes exceeds the server's frame limit of "
                f"{self._send_cap} bytes")
        while self._in_flight >= self._inflight_cap:
            self._flush()
            self._pump(self._o.request_timeout, timeout_drops=True)
            if self._sock is None:
                raise errors.ClosedError("connection lost while waiting to send")
        self._next_id = rid
        self._out += core.HEADER.pack(len(body))
        self._out += body
        self._pending[rid] = _WAITING
        self._deadlines[rid] = deadline or (time.monotonic() + self._o.request_timeout)
        self._in_flight += 1
        if len(self._out) >= _FLUSH_BYTES:
            self._flush()
        return rid

    def flush(self) -> None:
        """Write out the requests queued by append_async now (they are
        written anyway once 64 KiB are queued or a reply is waited for)."""
        self._flush()

    def _flush(self) -> None:
        if not self._out or self._sock is None:
            return
        data = bytes(self._out)
        self._out.clear()
        try:
            self._sock.settimeout(self._o.request_timeout)
            self._sock.sendall(data)
        except socket.timeout:
            self._drop(errors.ClosedError("sending a request timed out: connection dropped"))
        except OSError as e:
            self._drop(errors.ClosedError(f"connection lost while sending: {e}"))

    def _pump(self, timeout: float, timeout_drops: bool = False) -> bool:
        """Read what arrives within timeout and dispatch every complete frame.
        Returns whether anything was read."""
        sock = self._sock
        if sock is None:
            return False
        try:
            if timeout <= 0 and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                r, _, _ = select.select([sock], [], [], 0)
                if not r:
                    return False
            sock.settimeout(timeout if timeout > 0 else 0.0)
            data = sock.recv(_RECV_BYTES)
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
            if timeout_drops:
                self._drop(errors.ClosedError(
                    f"no reply within {self._o.request_timeout:g} s: connection dropped"))
            return False
        except OSError as e:
            self._drop(errors.ClosedError(f"connection lost: {e}"))
            return False
        if not data:
            mid = " in the middle of a frame" if self._in else ""
            self._drop(errors.ClosedError(f"server closed the connection{mid}"))
            return False
        buf = self._in
        buf += data
        off = 0
        n = len(buf)
        while n - off >= 4:
            (blen,) = core.HEADER.unpack_from(buf, off)
            if blen > self._recv_cap:
                self._drop(errors.TooLargeError(
                    f"server sent a frame of {blen} bytes (cap {self._recv_cap}): "
                    f"connection dropped"))
                return True
            if n - off - 4 < blen:
                if blen > _RECV_BYTES and off == 0:
                    # A large frame: receive the rest straight into its buffer.
                    return self._recv_body(blen)
                break
            body = bytes(buf[off + 4:off + 4 + blen])
            off += 4 + blen
            self._dispatch(body)
            if self._sock is None:
                return True
        del buf[:off]
        return True

    def _recv_body(self, blen: int) -> bool:
        """Receive the rest of a frame whose header is at the start of _in."""
        body = bytearray(blen)
        have = len(self._in) - 4
        body[:have] = memoryview(self._in)[4:]
        self._in.clear()
        view = memoryview(body)
        sock = self._sock
        deadline = time.monotonic() + self._o.request_timeout
        try:
            while have < blen:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                got = sock.recv_into(view[have:])
                if got == 0:
                    self._drop(errors.ClosedError(
                        "server closed the connection in the middle of a frame"))
                    return True
                have += got
        except (socket.timeout, ssl.SSLWantReadError):
            self._drop(errors.ClosedError("a frame did not complete in time: connection dropped"))
            return True
        except OSError as e:
            self._drop(errors.ClosedError(f"connection lost: {e}"))
            return True
        finally:
            view.release()
        self._dispatch(bytes(body))
        return True

    def _dispatch(self, body: bytes) -> None:
        try:
            resp = pb.Response.FromString(body)
        except Exception:
            self._drop(errors.MalformedError(
                "server sent an undecodable frame: connection dropped"))
            return
        kind = resp.WhichOneof("kind")
        rid = resp.id
        if kind in core.PUSH_KINDS:
            sub = self._subs.get(rid)
            if sub is not None:
                sub._on_push(kind, resp, len(body))
            return
        if rid == 0:
            if kind == "error":
                self._notice = f"{errors.error_for(resp.error.code).name}: {resp.error.message}"
            return
        if self._pending.get(rid) is not _WAITING:
            return
        self._in_flight -= 1
        self._deadlines.pop(rid, None)
        if rid in self._abandoned:
            self._abandoned.discard(rid)
            del self._pending[rid]
            return
        self._pending[rid] = resp

    def _wait(self, rid: int):
        """The reply to request rid (a Response); raises what ended it."""
        self._flush()
        while True:
            v = self._pending.get(rid)
            if v is None:
                raise errors.NotFoundError(f"unknown request {rid}")
            if v is not _WAITING:
                del self._pending[rid]
                if isinstance(v, errors.EsdError):
                    raise v
                return v
            deadline = self._deadlines.get(rid, 0.0)
            left = deadline - time.monotonic()
            if left <= 0:
                del self._pending[rid]
                self._deadlines.pop(rid, None)
                self._in_flight -= 1
                self._drop(errors.ClosedError("a reply did not come in time: connection dropped"))
                raise errors.TimeoutError("no reply within the request timeout")
            self._pump(left)

    def _abandon(self, rid: int) -> None:
        v = self._pending.get(rid)
        if v is None:
            return
        if v is _WAITING:
            self._abandoned.add(rid)
        else:
            del self._pending[rid]

    def _await_pushes(self, owner, deadline: Optional[float]) -> bool:
        """One wait of a push consumer (a Subscription or a GroupMember, whose
        ``_last_rx`` is when it last heard from the server): after
        request_timeout without a push, a ping (a dead connection shows and
        is dropped); else read what arrives until then or the deadline.
        Returns False once the deadline has passed."""
        now = time.monotonic()
        beat = self._o.request_timeout
        if now - owner._last_rx >= beat:
            try:
                self.ping()
            except (errors.ClosedError, errors.TimeoutError):
                pass
            owner._last_rx = time.monotonic()
            return True
        until = owner._last_rx + beat
        if deadline is not None:
            if now >= deadline:
                return False
            until = min(until, deadline)
        self._flush()
        self._pump(until - now)
        return True

    def _call(self, req, kind: str):
        self._ensure()
        rid = self._submit(req)
        return core.check_reply(self._wait(rid), kind)

    # --------------------------------------------------------- requests --

    def ping(self, payload: bytes = b"") -> float:
        """Round trip to the server; returns the round-trip time in seconds."""
        t0 = time.perf_counter()
        pong = self._call(core.simple_request("ping", payload=payload), "ping")
        if pong.payload != payload:
            raise errors.MalformedError("the pong does not echo the ping")
        return time.perf_counter() - t0

    def stats(self) -> Stats:
        """The server's statistics."""
        return Stats(self._call(core.simple_request("stats"), "stats"))

    def append(self, stream: str, events: Iterable[Event], expected=None, *,
               subject: Optional[str] = None) -> AppendResult:
        """Append events to one stream, all or nothing, if the stream is in the
        expected state (esd.ANY by default, NO_STREAM, STREAM_EXISTS, or an int:
        the exact last revision). ``subject`` ties a new stream to a data
        subject (erase_subject erases all of its streams at once); an
        existing stream must already belong to it.

        Raises WrongExpectedRevisionError (``.conflicts`` has the actual state),
        IdempotencyConflictError, the argument errors (InvalidStreamIdError,
        ReservedStreamError, InvalidEventTypeError, TooManyEventsError,
        TooLargeError, ...), ClosedError / TimeoutError (outcome unknown:
        append the same Event objects again, their ids make it idempotent)."""
        return self.append_async(stream, events, expected, subject=subject).result()

    def append_async(self, stream: str, events: Iterable[Event], expected=None, *,
                     subject: Optional[str] = None) -> PendingAppend:
        """Send an append without waiting for its result (pipelining): many
        may be in flight; ``.result()`` of the returned handle waits for one.
        Raises the argument errors at once; TooManyRequestsError when
        max_pending results are uncollected."""
        if len(self._pending) >= self._o.max_pending:
            raise errors.TooManyRequestsError(
                f"{len(self._pending)} results are not collected yet")
        self._ensure()
        req = core.append_request(stream, expected, events,
                                  self._info.limits if self._info else None, subject)
        rid = self._submit(req)
        return PendingAppend(self, rid, _append_result)

    def transaction(self, appends) -> List[AppendResult]:
        """Append to several streams, each with its own expectation, all or
        nothing: ``appends`` is a list of (stream, expected, events). Returns
        one AppendResult per append. On WrongExpectedRevisionError
        ``.conflicts`` lists every failed check."""
        self._ensure()
        req = core.transaction_request(appends, self._info.limits if self._info else None)
        rid = self._submit(req)
        return _txn_result(self._wait(rid))

    def stream_info(self, stream: str) -> StreamInfo:
        """The record of one stream; NotFoundError when it has no events."""
        return StreamInfo._from(self._call(
            core.simple_request("stream_info", stream=stream.encode()), "stream_info"))

    def list_streams(self, prefix: str = "", after: str = "",
                     limit: Optional[int] = None) -> Iterator[StreamInfo]:
        """Streams in id order (those starting with prefix, after the id
        ``after``), at most ``limit``; pages as needed."""
        left = limit
        while left is None or left > 0:
            page = 1000 if left is None else min(left, 1000)
            lst = self._call(core.list_streams_request(prefix, after, page), "list_streams")
            for s in lst.streams:
                info = StreamInfo._from(s)
                after = info.stream
                yield info
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            if not lst.more or not lst.streams:
                return

    def save_snapshot(self, stream: str, revision: int, data: bytes,
                      state_format: int = 0) -> None:
        """Store the snapshot of a stream at a revision (replacing an older one)."""
        self._ensure()
        req = core.simple_request("save_snapshot", stream=stream.encode(), revision=revision,
                                  state_format=state_format, data=bytes(data))
        core.check_reply(self._wait(self._submit(req)), "save_snapshot")

    def load_snapshot(self, stream: str) -> Snapshot:
        """The latest snapshot of a stream; NotFoundError when there is none."""
        return Snapshot._from(self._call(
            core.simple_request("load_snapshot", stream=stream.encode()), "load_snapshot"))

    # --------------------------------------------------------- lifecycle --

    def delete_stream(self, stream: str, expected=None) -> StreamDeleted:
        """Soft-delete a stream if it is in the expected state (esd.ANY by
        default, NO_STREAM, STREAM_EXISTS, or an int: the exact last
        revision). Its events are no longer served: reading it raises
        NotFoundError until the next append, which recreates it with the
        revisions after the deleted ones. Deleting a deleted stream changes
        nothing (a deleted stream counts as NO_STREAM, but its last revision
        still matches as exact). Returns the last revision deleted.

        Raises NotFoundError (the stream never existed), StreamDeletedError
        (tombstoned), WrongExpectedRevisionError, InvalidStreamIdError,
        ReservedStreamError ('$' streams), PermissionDeniedError (needs the
        write role)."""
        return StreamDeleted._from(self._call(
            core.delete_request("delete_stream", stream, expected), "delete_stream"))

    def tombstone_stream(self, stream: str, expected) -> StreamDeleted:
        """Delete a stream for ever, if it is in the expected state (pass
        esd.ANY to skip the check): it can never be written or read again,
        both raise StreamDeletedError. Tombstoning a tombstoned stream
        changes nothing. Needs the admin role. Raises as delete_stream."""
        return StreamDeleted._from(self._call(
            core.delete_request("tombstone_stream", stream, expected), "tombstone_stream"))

    def set_stream_metadata(self, stream: str, expected_metadata_revision, *,
                            truncate_before: Optional[int] = None,
                            max_count: Optional[int] = None,
                            max_age=None) -> StreamMetadata:
        """Set a stream's retention, replacing every limit (None or 0: no
        limit): revisions below ``truncate_before`` are not served, only the
        last ``max_count`` events are, only events younger than ``max_age``
        (seconds, or a datetime.timedelta) are. Reads honour it at once;
        nothing is removed, so lowering a limit serves the events again.

        The metadata has its own revision, checked against
        ``expected_metadata_revision``: esd.NO_STREAM (none set yet), an int
        (the revision of the metadata read, see get_stream_metadata) or
        esd.ANY (no check). Returns the state stored.

        Raises WrongExpectedRevisionError (changed meanwhile), NotFoundError,
        StreamDeletedError, InvalidArgumentError (a negative limit,
        ``truncate_before`` beyond the last revision + 1, ``max_age`` above
        100 years), InvalidStreamIdError, ReservedStreamError, TypeError."""
        return StreamMetadata._from(self._call(
            core.set_metadata_request(stream, expected_metadata_revision, truncate_before,
                                      max_count, max_age), "set_stream_metadata"))

    def get_stream_metadata(self, stream: str) -> StreamMetadata:
        """A stream's lifecycle state (retention and deletion). Raises
        NotFoundError (never existed), StreamDeletedError (tombstoned)."""
        return StreamMetadata._from(self._call(
            core.get_metadata_request(stream), "get_stream_metadata"))

    # ----------------------------------------------------------- erasure --

    def erase_stream(self, stream: str, expected=None, *, force: bool = False) -> Erased:
        """Erase a stream by destroying its data key (docs/erasure.md): its
        events' data and metadata and its snapshot can never be read again,
        from any copy; reads and appends then raise ErasedError. Cannot be
        undone, so a confirmation is required: ``expected`` (the exact last
        revision you checked, or esd.STREAM_EXISTS) or ``force=True``. Needs
        the admin role. Raises NotErasableError (stored in plain),
        InvalidArgumentError (no confirmation; a stream of a subject: erase
        the subject), WrongExpectedRevisionError, NotFoundError."""
        return Erased._from(self._call(
            core.erase_stream_request(stream, expected, force), "erase_stream"))

    def erase_subject(self, subject: str, *, force: bool = False) -> Erased:
        """Erase every stream of a data subject at once (one key; streams are
        tied to a subject by ``append(..., subject=...)`` when created).
        ``force=True`` is the confirmation. Needs the admin role."""
        return Erased._from(self._call(
            core.erase_subject_request(subject, force), "erase_subject"))

    # ---------------------------------------------------- consumer groups --

    def create_group(self, name: str, *, stream: Optional[str] = None,
                     category: Optional[str] = None, event_type: Optional[str] = None,
                     stream_prefix: Optional[str] = None, from_start: bool = False,
                     after: Optional[int] = None, from_end: bool = False,
                     ack_timeout_ms: Optional[int] = None, max_retries: Optional[int] = None,
                     park_blocks: bool = False,
                     max_in_flight: Optional[int] = None) -> GroupState:
        """Create a consumer group over a stream, a category, an event type, a
        stream prefix or (none given) the whole log, starting at the first
        event (default), ``after`` a position, or ``from_end``. Settings
        (None: the server's default): ``ack_timeout_ms`` (30,000), the
        redeliveries before parking ``max_retries`` (10), ``park_blocks``
        (a parked event holds its stream until replayed), ``max_in_flight``
        per member (1,000). Needs the admin role. Raises GroupExistsError,
        InvalidArgumentError (absurd settings). docs/groups.md."""
        target, tname = core.subscribe_target(stream, category, event_type, stream_prefix)
        last, from_end = core.resolve_start(from_start, after, from_end)
        settings = dict(ack_timeout_ms=ack_timeout_ms, max_retries=max_retries,
                        park_blocks=park_blocks, max_in_flight=max_in_flight)
        self._call(core.create_group_request(name, target, tname, last, from_end, settings),
                   "create_group")
        return self.group_info(name)

    def update_group(self, name: str, *, ack_timeout_ms: Optional[int] = None,
                     max_retries: Optional[int] = None, park_blocks: bool = False,
                     max_in_flight: Optional[int] = None) -> GroupState:
        """Replace a group's settings (every one; None: the default). Admin role."""
        settings = dict(ack_timeout_ms=ack_timeout_ms, max_retries=max_retries,
                        park_blocks=park_blocks, max_in_flight=max_in_flight)
        self._call(core.update_group_request(name, settings), "update_group")
        return self.group_info(name)

    def delete_group(self, name: str) -> None:
        """Delete a group with its checkpoint and parked events; its members
        get GroupNotFoundError. Admin role."""
        self._call(core.group_name_request("delete_group", name), "delete_group")

    def group_info(self, name: str) -> GroupState:
        """A group's state: checkpoint, lag, members, in flight, parked."""
        return GroupState._from(self._call(core.group_name_request("group_info", name),
                                           "group_info"))

    def list_groups(self) -> List[GroupState]:
        """Every group, by name."""
        return [GroupState._from(g) for g in
                self._call(core.simple_request("list_groups"), "list_groups").groups]

    def list_parked(self, name: str, after: int = 0) -> Iterator[ParkedEvent]:
        """Iterate over a group's parked events in position order, strictly
        after ``after``, paging as needed."""
        while True:
            page = self._call(core.list_parked_request(name, after, 0), "list_parked")
            for m in page.events:
                after = m.position
                yield ParkedEvent._from(m)
            if not page.more or not page.events:
                return

    def replay_parked(self, name: str) -> int:
        """Deliver a group's parked events again (each with a fresh retry
        count); returns how many were put back. Admin role."""
        return self._call(core.group_name_request("replay_parked", name),
                          "replay_parked").count

    def join_group(self, name: str, *, max_in_flight: int = 0,
                   consumer: str = "") -> GroupMember:
        """Join a group as a competing consumer on this connection (read
        role); ``max_in_flight`` caps the events it holds at once (0: the
        group's), ``consumer`` labels it in group_info and the server's
        logs. See GroupMember. Raises GroupNotFoundError,
        AlreadyJoinedError (this connection is a member already)."""
        m = GroupMember(self, name, max_in_flight, consumer)
        m._join()
        return m

    # ------------------------------------------------------------- reads --

    def read_stream(self, stream: str, from_revision: Optional[int] = None, *,
                    backward: bool = False, max_count: Optional[int] = None,
                    page_size: int = 0) -> Iterator[RecordedEvent]:
        """Iterate over the events of one stream, from ``from_revision``
        (inclusive; default the first, or the last when backward), paging as
        needed. Raises NotFoundError (on the first next()) when the stream
        does not exist."""
        if from_revision is None:
            from_revision = END if backward else 0

        def make(frm, limit):
            return core.read_stream_request(stream, frm, backward, limit)
        return self._read(make, from_revision, backward, max_count, page_size, True)

    def read_all(self, from_position: Optional[int] = None, *, backward: bool = False,
                 max_count: Optional[int] = None, page_size: int = 0,
                 category: Optional[str] = None, event_type: Optional[str] = None,
                 stream_prefix: Optional[str] = None) -> Iterator[RecordedEvent]:
        """Iterate over the global log from ``from_position`` (inclusive;
        default the first, or the last when backward), optionally filtered
        by one of category, event_type or stream_prefix."""
        flt = core.filter_of(category, event_type, stream_prefix)
        if from_position is None:
            from_position = END if backward else 0

        def make(frm, limit):
            return core.read_all_request(frm, backward, limit, flt)
        return self._read(make, from_position, backward, max_count, page_size, False)

    def _read(self, make, frm, backward, max_count, page_size, by_revision):
        left = max_count
        resumes = 0
        pending_id = None
        pending_epoch = 0
        last = None  # the last event handed out: where a resumed read restarts

        def limit(n_left):
            lim = page_size
            if n_left is not None and (lim == 0 or n_left < lim):
                lim = n_left
            return lim

        try:
            while left is None or left > 0:
                try:
                    if pending_id is None or pending_epoch != self._epoch:
                        if last is not None:
                            key = last.revision if by_revision else last.position
                            frm = key - 1 if backward else key + 1
                        self._ensure()
                        pending_id = self._submit(make(frm, limit(left)))
                        pending_epoch = self._epoch
                    page = core.check_reply(self._wait(pending_id), "read_stream")
                except (errors.ClosedError, errors.TimeoutError):
                    pending_id = None
                    if resumes >= _READ_RESUMES:
                        raise
                    resumes += 1
                    continue
                pending_id = None
                events = page.events
                n = len(events)
                more = not page.end_of_stream and n > 0
                if left is not None:
                    if n >= left:
                        events = events[:left]
                        n = left
                        more = False
                    left -= n
                if more:
                    # Read ahead: the next page travels while this one is consumed.
                    pending_id = self._submit(make(page.next, limit(left)))
                    pending_epoch = self._epoch
                for m in events:
                    last = m
                    yield RecordedEvent(m)
                if not more:
                    break
                frm = page.next
        finally:
            if pending_id is not None:
                self._abandon(pending_id)

    # ----------------------------------------------------- subscriptions --

    def subscribe(self, stream: Optional[str] = None, *, category: Optional[str] = None,
                  event_type: Optional[str] = None, stream_prefix: Optional[str] = None,
                  from_start: bool = False, after: Optional[int] = None,
                  from_end: bool = False, batch_size: int = 0) -> "Subscription":
        """Subscribe to a stream, a category, an event type, a stream prefix,
        or (none given) the whole log: history first, then a CaughtUp
        marker, then live events.

        Start: from the first event (the default), ``after`` a point (a
        revision for a stream, a position otherwise), or ``from_end``. The
        subscription remembers the last event it handed out and, when the
        connection is lost, resubscribes strictly after it: every event
        exactly once, in order, across reconnects."""
        target, name = core.subscribe_target(stream, category, event_type, stream_prefix)
        last, from_end = core.resolve_start(from_start, after, from_end)
        sub = Subscription(self, target, name, last, from_end, batch_size)
        if from_end and target == core.TARGET_STREAM:
            # Revisions: SubscribeOk's head is a position, so take the
            # stream's last revision now and start after it.
            try:
                sub._last = sub._seen = self.stream_info(stream).last_revision
                sub._from_end = False
            except errors.NotFoundError:
                sub._from_end = False
        sub._subscribe_now()
        return sub


def _append_result(resp) -> AppendResult:
    return AppendResult._from(core.check_reply(resp, "append"))


def _txn_result(resp) -> List[AppendResult]:
    return [AppendResult._from(r) for r in core.check_reply(resp, "transaction").results]


class Subscription:
    """A catch-up subscription (see Client.subscribe).

    Iterating yields RecordedEvent objects (blocking until they come);
    ``items(timeout)`` yields CaughtUp markers too and stops after
    ``timeout`` seconds without anything; ``poll(timeout)`` returns what
    arrived as a list. ``last`` is the last point handed out (a revision for
    a stream subscription, a position otherwise), ``caught_up`` whether the
    history was delivered at least once. Errors: ConnectionError /
    CircuitOpenError when the connection cannot be remade this time (iterate
    again to retry, nothing is lost); the server's reason when it dropped
    the subscription, which is then closed.
    """

    def __init__(self, client: Client, target: int, name: bytes, last: Optional[int],
                 from_end: bool, batch_size: int):
        self._c = client
        self._target = target
        self._name = name
        self._last = last  # handed out to the caller
        self._seen = last  # decoded from the pushes (>= _last)
        self._ready = deque()  # decoded, not handed out yet
        self._from_end = from_end
        self._batch = batch_size
        self._id = 0
        self._epoch = -1
        self._queue = deque()
        self._queued = 0
        self._discard = False
        self._closed: Optional[errors.EsdError] = None
        self._caught_up = False
        self._store_id = None
        self._last_rx = time.monotonic()

    @property
    def last(self) -> Optional[int]:
        """The last point handed out (before any: the start point, or None)."""
        return self._last

    @property
    def caught_up(self) -> bool:
        """True once the history was delivered (at least once)."""
        return self._caught_up

    def _attached(self) -> bool:
        c = self._c
        return c.connected and self._id != 0 and self._epoch == c._epoch

    def _subscribe_now(self) -> None:
        c = self._c
        c._ensure()
        self._check_store()
        rid = c._submit(self._request())
        self._attach(rid)
        try:
            ok = core.check_reply(c._wait(rid), "subscribe")
        except errors.EsdError as e:
            self._refused(rid, e)
            raise
        self._subscribed(ok)

    # The steps of (re)subscribing that the asyncio Subscription shares.

    def _check_store(self) -> None:
        """Refuse to resume on a server that serves another store."""
        info = self._c.server_info
        if self._store_id is not None and info is not None and info.store_id != self._store_id:
            self._close(errors.IncompatibleStoreError(
                "the server now serves another store (its store id changed): the "
                "subscription's positions mean nothing there"))
            raise self._closed

    def _request(self):
        return core.subscribe_request(self._target, self._name, self._seen, self._from_end,
                                      self._batch)

    def _attach(self, rid: int) -> None:
        c = self._c
        self._id = rid
        self._epoch = c._epoch
        self._discard = False
        c._subs[rid] = self

    def _refused(self, rid: int, e: errors.EsdError) -> None:
        self._c._subs.pop(rid, None)
        self._id = 0
        self._queue.clear()
        self._queued = 0
        if not isinstance(e, _TRANSIENT):
            self._close(e)

    def _subscribed(self, ok) -> None:
        if self._from_end:
            self._from_end = False
            self._last = self._seen = ok.head_position
        info = self._c.server_info
        if self._store_id is None and info is not None:
            self._store_id = info.store_id
        self._last_rx = time.monotonic()

    def _close(self, exc: errors.EsdError) -> None:
        self._closed = exc
        self._c._subs.pop(self._id, None)
        self._id = 0
        self._ready.clear()
        self._queue.clear()
        self._queued = 0

    def _on_push(self, kind: str, resp, size: int) -> None:
        if self._discard or self._closed is not None:
            return
        self._last_rx = time.monotonic()
        if kind == "events":
            if self._queue and self._queued + size > core.SUB_QUEUE_BYTES:
                self._discard = True  # deliver what is queued, then resubscribe
                return
            self._queue.append((resp.events.events, size))
            self._queued += size
        elif kind == "caught_up":
            self._queue.append(CaughtUp(resp.caught_up.position))
        else:
            self._queue.append(errors.make_error(
                resp.dropped.reason,
                f"the server dropped the subscription: {resp.dropped.message}"))

    def _resubscribe(self) -> None:
        c = self._c
        if self._attached():
            c._subs.pop(self._id, None)
            try:
                c._submit(core.simple_request("unsubscribe", subscription_id=self._id))
                c._abandon(c._next_id)
            except errors.EsdError:  # pragma: no cover - dropped meanwhile
                pass
        else:
            c._subs.pop(self._id, None)
        self._id = 0
        self._discard = False
        self._subscribe_now()

    def items(self, timeout: Optional[float] = None) -> Iterator[object]:
        """Yield events and CaughtUp markers as they come; stop after timeout
        seconds with nothing (None: never). An item counts as delivered when
        it is yielded: stopping early loses nothing."""
        while self._ready or self._fill(timeout):
            yield self._hand_out(self._ready.popleft())

    def __iter__(self) -> Iterator[RecordedEvent]:
        for item in self.items(None):
            if isinstance(item, RecordedEvent):
                yield item

    def poll(self, timeout: Optional[float] = 0.0) -> List[object]:
        """Wait up to timeout seconds (None: until something comes) and return
        what arrived: RecordedEvent objects and CaughtUp markers, in order.
        Resubscribes after a lost connection, strictly after ``last``."""
        if self._closed is not None:
            raise self._closed
        if not self._ready:
            self._fill(timeout)
        return self._take_all()

    def _fill(self, timeout: Optional[float]) -> bool:
        """Wait up to timeout for items; whether some are ready."""
        if self._closed is not None:
            raise self._closed
        c = self._c
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._queue:
                self._deliver()
            if self._ready:
                return True
            if self._discard or not self._attached():
                self._resubscribe()
                continue
            if not c._await_pushes(self, deadline):
                return False

    def _deliver(self) -> None:
        """Decode the queued pushes into _ready, dropping what was seen
        already; a gap in a gapless target (one stream's revisions; the
        whole log has holes where deleted events are left out) discards
        the rest and resubscribes after the last event seen."""
        gapless = self._target == core.TARGET_STREAM
        stream = self._target == core.TARGET_STREAM
        ready = self._ready
        while self._queue:
            item = self._queue.popleft()
            if not isinstance(item, tuple):
                ready.append(item)  # a CaughtUp, or the error that ended it
                if isinstance(item, errors.EsdError):
                    self._queue.clear()
                    self._queued = 0
                    self._c._subs.pop(self._id, None)
                    self._id = 0
                continue
            msgs, size = item
            self._queued -= size
            for m in msgs:
                key = m.revision if stream else m.position
                seen = self._seen
                if seen is not None and key <= seen:
                    continue  # delivered already: never twice
                want = (seen + 1) if seen is not None else (0 if stream else 1)
                if gapless and key != want:
                    self._queue.clear()
                    self._queued = 0
                    self._discard = True
                    return
                self._seen = key
                ready.append(RecordedEvent(m))

    def _hand_out(self, item):
        if isinstance(item, errors.EsdError):
            self._ready.appendleft(item)
            self._close_for_good(item)
            raise item
        if isinstance(item, CaughtUp):
            self._caught_up = True
        else:
            self._last = item._m.revision if self._target == core.TARGET_STREAM \
                else item._m.position
        return item

    def _close_for_good(self, exc) -> None:
        self._ready.clear()
        self._close(exc)

    def _take_all(self) -> List[object]:
        out = []
        while self._ready:
            item = self._ready[0]
            if isinstance(item, errors.EsdError) and out:
                break
            self._ready.popleft()
            out.append(self._hand_out(item))
        return out

    def close(self) -> None:
        """Unsubscribe (best effort, without waiting) and forget queued pushes."""
        c = self._c
        if self._closed is None and self._attached():
            try:
                c._submit(core.simple_request("unsubscribe", subscription_id=self._id))
                c._abandon(c._next_id)
                c._flush()
            except errors.EsdError:  # pragma: no cover
                pass
        self._close(errors.ClosedError("the subscription was closed"))

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_TRANSIENT = core.TRANSIENT
