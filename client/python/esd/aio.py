"""The asyncio client of esd (esd.aio.Client): the surface of esd.Client
with coroutines, async iterators and async generators.

    async with esd.aio.Client("127.0.0.1:7400") as c:
        await c.append("s-1", [esd.Event("Happened")])
        async for ev in c.read_stream("s-1"):
            ...

Design notes: one connection per client; a reader task takes every frame
off the connection and completes the future of its request (matched by
id, in any order) or queues it on the subscription it belongs to.
Requests made in one turn of the event loop leave in one write (the
transport buffers; a writer above 1 MiB of buffered bytes is drained),
so concurrent coroutines
pipeline on one connection, at most max_in_flight unanswered. Connection
policy (attempts, full-jitter backoff, circuit breaker, refusals that are
not retried), request timeouts and the subscription's exactly-once resume
are those of the blocking client (esd.client, esd._core).
"""

import asyncio
import ssl
import time
from collections import deque
from typing import AsyncIterator, Iterable, List, Optional

from . import _core as core
from . import errors
from ._pb import pb
from .client import Subscription as _SyncSubscription
from .client import _TRANSIENT, _append_result, _txn_result
from .types import (END, AppendResult, Erased, Event, GroupState, ParkedEvent, RecordedEvent,
                    Snapshot, Stats, StreamDeleted, StreamInfo, StreamMetadata)

__all__ = ["Client", "PendingAppend", "Subscription"]

_DRAIN_BYTES = 1 << 20
_FLUSH_BYTES = 64 * 1024
_READ_RESUMES = 2


class PendingAppend:
    """An append sent by Client.append_async: ``await result()`` for its outcome."""

    def __init__(self, client: "Client", fut: "asyncio.Future"):
        self._client = client
        self._fut = fut

    async def result(self) -> AppendResult:
        """The AppendResult; raises the request's error."""
        return _append_result(await self._fut)


class Client(core.ClientBase):
    """An asyncio connection to esd; the arguments are those of esd.Client."""

    def _init_transport(self) -> None:
        # self._pending: id -> Future
        self._reader = None
        self._writer = None
        self._task = None
        self._waiters = deque()  # futures of senders waiting for room in flight
        self._lock = None
        self._flush_soon = False

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the client holds a connection that completed the Hello."""
        return self._ready and self._writer is not None

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    async def connect(self) -> None:
        """Connect and do the Hello now (see esd.Client.connect)."""
        await self._ensure()

    async def close(self) -> None:
        """Drop the connection; requests in flight fail with ClosedError."""
        self._drop(errors.ClosedError("the client closed the connection"))
        if self._task is not None and self._task is not asyncio.current_task():
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def _drop(self, exc: errors.EsdError) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._reader = None
        self._ready = False
        self._out.clear()
        if self._notice:
            exc = type(exc)(f"{exc.message} (server said: {self._notice})")
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warnings
        waiters, self._waiters = self._waiters, deque()
        for w in waiters:
            if not w.done():
                w.set_result(None)
        for sub in list(self._subs.values()):
            sub._wake.set()

    async def _ensure(self) -> None:
        if self._writer is not None and self._ready:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._writer is not None and self._ready:
                return
            made = 0
            cause = ""
            for a in range(self._o.reconnect_attempts):
                if a > 0:
                    await asyncio.sleep(core.backoff_delay(
                        self._o.backoff_initial, self._o.backoff_max, a - 1, self._rng))
                ok, wait = self._breaker.allow(self.clock())
                if not ok:
                    if made == 0:
                        raise errors.CircuitOpenError(
                            f"circuit breaker open after {self._breaker.failures} consecutive "
                            f"connection failures; next trial in {wait * 1000:.0f} ms")
                    break
                made += 1
                try:
                    await self._connect_once()
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
            tail = ("; circuit breaker now open"
                    if self._breaker.state == core.BREAKER_OPEN else "")
            raise errors.ConnectionError(
                f"cannot connect to {self._o.address}: {cause} ({made} attempt"
                f"{'' if made == 1 else 's'}{tail})")

    async def _connect_once(self) -> None:
        o = self._o
        deadline = time.monotonic() + o.connect_timeout
        self._reset_limits()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                o.host, o.port, ssl=o.ssl_context,
                server_hostname=o.server_hostname if o.ssl_context else None,
                limit=1 << 20), o.connect_timeout)
        except ssl.SSLCertVerificationError as e:
            raise errors.ConnectionError(
                f"TLS handshake with {o.address} failed: the server's certificate is not "
                f"trusted for \"{o.server_hostname}\": {e.verify_message}") from None
        except asyncio.TimeoutError:
            raise errors.ConnectionError("timed out") from None
        except (OSError, ssl.SSLError) as e:
            raise errors.ConnectionError(getattr(e, "strerror", None) or str(e)) from None
        self._reader, self._writer = reader, writer
        self._task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        try:
            fut = self._submit(core.hello_request(o), deadline)
            ok = core.check_reply(await fut, "hello")
        except errors.EsdError as e:
            self._drop(errors.ClosedError("hello refused"))
            raise self._hello_error(e) from None
        self._accept_hello(ok)

    async def _read_loop(self, reader) -> None:
        buf = bytearray()
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    if self._reader is reader:
                        mid = " in the middle of a frame" if buf else ""
                        self._drop(errors.ClosedError(f"server closed the connection{mid}"))
                    return
                buf += data
                off, n = 0, len(buf)
                while n - off >= 4:
                    (blen,) = core.HEADER.unpack_from(buf, off)
                    if blen > self._recv_cap:
                        self._drop(errors.TooLargeError(
                            f"server sent a frame of {blen} bytes (cap {self._recv_cap}): "
                            "connection dropped"))
                        return
                    if n - off - 4 < blen:
                        break
                    body = bytes(buf[off + 4:off + 4 + blen])
                    off += 4 + blen
                    if not self._dispatch(body):
                        return
                del buf[:off]
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError) as e:
            if self._reader is reader:
                self._drop(errors.ClosedError(f"connection lost: {e}"))

    def _dispatch(self, body: bytes) -> bool:
        try:
            resp = pb.Response.FromString(body)
        except Exception:
            self._drop(errors.MalformedError("server sent an undecodable frame: "
                                             "connection dropped"))
            return False
        kind = resp.WhichOneof("kind")
        rid = resp.id
        if kind in core.PUSH_KINDS:
            sub = self._subs.get(rid)
            if sub is not None:
                sub._on_push(kind, resp, len(body))
            return True
        if rid == 0:
            if kind == "error":
                self._notice = f"{errors.error_for(resp.error.code).name}: {resp.error.message}"
            return True
        fut = self._pending.pop(rid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(resp)
            self._wake_one()
        return True

    def _submit(self, req, deadline: Optional[float] = None) -> "asyncio.Future":
        """Queue a request (connected, with room in flight); its future, which
        fails with TimeoutError (and drops the connection) at the deadline
        (default: request_timeout from now)."""
        if self._writer is None:
            raise errors.ClosedError("not connected")
        rid = self._next_id + 1
        req.id = rid
        body = req.SerializeToString()
        if len(body) > self._send_cap:
            raise errors.TooLargeError(
                f"request of {len(body)} bytes exceeds the server's frame limit of "
                f"{self._send_cap} bytes")
        self._next_id = rid
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[rid] = fut
        if deadline is None:
            deadline = time.monotonic() + self._o.request_timeout
        handle = loop.call_at(loop.time() + (deadline - time.monotonic()), self._expire, rid)
        fut.add_done_callback(lambda _f: handle.cancel())
        out = self._out
        out += core.HEADER.pack(len(body))
        out += body
        if len(out) >= _FLUSH_BYTES:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        # Requests made in one turn of the loop leave in one write.
        self._flush_soon = False
        if self._out and self._writer is not None:
            self._writer.write(bytes(self._out))
        self._out.clear()

    async def _room(self) -> None:
        """Wait until a request may be sent (fewer than the cap in flight).
        Waiters are woken one per reply, in order; no timer of their own:
        a request in flight that times out drops the connection, which
        wakes them all."""
        while self._writer is not None and len(self._pending) >= self._inflight_cap:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        if self._writer is None:
            raise errors.ClosedError("connection lost while waiting to send")

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def _send(self, req) -> "asyncio.Future":
        await self._ensure()
        await self._room()
        fut = self._submit(req)
        w = self._writer
        if w is not None and w.transport.get_write_buffer_size() > _DRAIN_BYTES:
            await w.drain()
        return fut

    async def _wait(self, fut, deadline: Optional[float] = None):
        return await fut

    def _expire(self, rid: int) -> None:
        fut = self._pending.pop(rid, None)
        if fut is None or fut.done():
            return
        self._wake_one()
        fut.set_exception(errors.TimeoutError("no reply within the request timeout"))
        self._drop(errors.ClosedError("a reply did not come in time: connection dropped"))

    async def _call(self, req, kind: str):
        fut = await self._send(req)
        return core.check_reply(await self._wait(fut), kind)

    # --------------------------------------------------------- requests --

    async def ping(self, payload: bytes = b"") -> float:
        """Round trip to the server; the round-trip time in seconds."""
        t0 = time.perf_counter()
        pong = await self._call(core.simple_request("ping", payload=payload), "ping")
        if pong.payload != payload:
            raise errors.MalformedError("the pong does not echo the ping")
        return time.perf_counter() - t0

    async def stats(self) -> Stats:
        """The server's statistics."""
        return Stats(await self._call(core.simple_request("stats"), "stats"))

    async def append(self, stream: str, events: Iterable[Event], expected=None, *,
                     subject: Optional[str] = None) -> AppendResult:
        """Append events to one stream (see esd.Client.append)."""
        return await (await self.append_async(stream, events, expected,
                                              subject=subject)).result()

    async def append_async(self, stream: str, events: Iterable[Event],
                           expected=None, *, subject: Optional[str] = None) -> PendingAppend:
        """Send an append and return at once with a handle (pipelining)."""
        if len(self._pending) >= self._o.max_pending:
            raise errors.TooManyRequestsError(f"{len(self._pending)} results are not collected")
        await self._ensure()
        req = core.append_request(stream, expected, events,
                                  self._info.limits if self._info else None, subject)
        fut = await self._send(req)
        return PendingAppend(self, fut)

    async def transaction(self, appends) -> List[AppendResult]:
        """Append to several streams, all or nothing (see esd.Client.transaction)."""
        await self._ensure()
        req = core.transaction_request(appends, self._info.limits if self._info else None)
        return _txn_result(await self._wait(await self._send(req)))

    async def stream_info(self, stream: str) -> StreamInfo:
        """The record of one stream; NotFoundError when it has no events."""
        return StreamInfo._from(await self._call(
            core.simple_request("stream_info", stream=stream.encode()), "stream_info"))

    async def list_streams(self, prefix: str = "", after: str = "",
                           limit: Optional[int] = None) -> AsyncIterator[StreamInfo]:
        """Streams in id order (see esd.Client.list_streams)."""
        left = limit
        while left is None or left > 0:
            page = 1000 if left is None else min(left, 1000)
            lst = await self._call(core.list_streams_request(prefix, after, page),
                                   "list_streams")
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

    async def save_snapshot(self, stream: str, revision: int, data: bytes,
                            state_format: int = 0) -> None:
        """Store the snapshot of a stream at a revision."""
        await self._call(core.simple_request(
            "save_snapshot", stream=stream.encode(), revision=revision,
            state_format=state_format, data=bytes(data)), "save_snapshot")

    async def load_snapshot(self, stream: str) -> Snapshot:
        """The latest snapshot of a stream; NotFoundError when there is none."""
        return Snapshot._from(await self._call(
            core.simple_request("load_snapshot", stream=stream.encode()), "load_snapshot"))

    async def delete_stream(self, stream: str, expected=None) -> StreamDeleted:
        """Soft-delete a stream (see esd.Client.delete_stream)."""
        return StreamDeleted._from(await self._call(
            core.delete_request("delete_stream", stream, expected), "delete_stream"))

    async def tombstone_stream(self, stream: str, expected) -> StreamDeleted:
        """Delete a stream for ever (see esd.Client.tombstone_stream)."""
        return StreamDeleted._from(await self._call(
            core.delete_request("tombstone_stream", stream, expected), "tombstone_stream"))

    async def set_stream_metadata(self, stream: str, expected_metadata_revision, *,
                                  truncate_before: Optional[int] = None,
                                  max_count: Optional[int] = None,
                                  max_age=None) -> StreamMetadata:
        """Set a stream's retention (see esd.Client.set_stream_metadata)."""
        return StreamMetadata._from(await self._call(
            core.set_metadata_request(stream, expected_metadata_revision, truncate_before,
                                      max_count, max_age), "set_stream_metadata"))

    async def get_stream_metadata(self, stream: str) -> StreamMetadata:
        """A stream's lifecycle state (see esd.Client.get_stream_metadata)."""
        return StreamMetadata._from(await self._call(
            core.get_metadata_request(stream), "get_stream_metadata"))

    async def erase_stream(self, stream: str, expected=None, *, force: bool = False) -> Erased:
        """Erase a stream (see esd.Client.erase_stream)."""
        return Erased._from(await self._call(
            core.erase_stream_request(stream, expected, force), "erase_stream"))

    async def erase_subject(self, subject: str, *, force: bool = False) -> Erased:
        """Erase every stream of a data subject (see esd.Client.erase_subject)."""
        return Erased._from(await self._call(
            core.erase_subject_request(subject, force), "erase_subject"))

    async def create_group(self, name: str, *, stream: Optional[str] = None,
                           category: Optional[str] = None, event_type: Optional[str] = None,
                           stream_prefix: Optional[str] = None, from_start: bool = False,
                           after: Optional[int] = None, from_end: bool = False,
                           ack_timeout_ms: Optional[int] = None,
                           max_retries: Optional[int] = None, park_blocks: bool = False,
                           max_in_flight: Optional[int] = None) -> GroupState:
        """Create a consumer group (see esd.Client.create_group). Members join
        through the blocking client (esd.Client.join_group)."""
        target, tname = core.subscribe_target(stream, category, event_type, stream_prefix)
        last, from_end = core.resolve_start(from_start, after, from_end)
        settings = dict(ack_timeout_ms=ack_timeout_ms, max_retries=max_retries,
                        park_blocks=park_blocks, max_in_flight=max_in_flight)
        await self._call(
            core.create_group_request(name, target, tname, last, from_end, settings),
            "create_group")
        return await self.group_info(name)

    async def update_group(self, name: str, *, ack_timeout_ms: Optional[int] = None,
                           max_retries: Optional[int] = None, park_blocks: bool = False,
                           max_in_flight: Optional[int] = None) -> GroupState:
        """Replace a group's settings (see esd.Client.update_group)."""
        settings = dict(ack_timeout_ms=ack_timeout_ms, max_retries=max_retries,
                        park_blocks=park_blocks, max_in_flight=max_in_flight)
        await self._call(core.update_group_request(name, settings), "update_group")
        return await self.group_info(name)

    async def delete_group(self, name: str) -> None:
        """Delete a group (see esd.Client.delete_group)."""
        await self._call(core.group_name_request("delete_group", name), "delete_group")

    async def group_info(self, name: str) -> GroupState:
        """A group's state (see esd.Client.group_info)."""
        return GroupState._from(await self._call(core.group_name_request("group_info", name),
                                                 "group_info"))

    async def list_groups(self) -> List[GroupState]:
        """Every group, by name."""
        reply = await self._call(core.simple_request("list_groups"), "list_groups")
        return [GroupState._from(g) for g in reply.groups]

    async def list_parked(self, name: str, after: int = 0) -> AsyncIterator[ParkedEvent]:
        """Iterate (async for) over a group's parked events in position order."""
        while True:
            page = await self._call(core.list_parked_request(name, after, 0), "list_parked")
            for m in page.events:
                after = m.position
                yield ParkedEvent._from(m)
            if not page.more or not page.events:
                return

    async def replay_parked(self, name: str) -> int:
        """Deliver a group's parked events again; returns how many."""
        reply = await self._call(core.group_name_request("replay_parked", name),
                                 "replay_parked")
        return reply.count

    def read_stream(self, stream: str, from_revision: Optional[int] = None, *,
                    backward: bool = False, max_count: Optional[int] = None,
                    page_size: int = 0) -> AsyncIterator[RecordedEvent]:
        """Iterate (async for) over the events of one stream (see esd.Client)."""
        if from_revision is None:
            from_revision = END if backward else 0

        def make(frm, limit):
            return core.read_stream_request(stream, frm, backward, limit)
        return self._read(make, from_revision, backward, max_count, page_size, True)

    def read_all(self, from_position: Optional[int] = None, *, backward: bool = False,
                 max_count: Optional[int] = None, page_size: int = 0,
                 category: Optional[str] = None, event_type: Optional[str] = None,
                 stream_prefix: Optional[str] = None) -> AsyncIterator[RecordedEvent]:
        """Iterate (async for) over the global log, optionally filtered."""
        flt = core.filter_of(category, event_type, stream_prefix)
        if from_position is None:
            from_position = END if backward else 0

        def make(frm, limit):
            return core.read_all_request(frm, backward, limit, flt)
        return self._read(make, from_position, backward, max_count, page_size, False)

    async def _read(self, make, frm, backward, max_count, page_size, by_revision):
        left = max_count
        resumes = 0
        ahead = None

        def limit_for(n_left):
            lim = page_size
            if n_left is not None and (lim == 0 or n_left < lim):
                lim = n_left
            return lim

        while left is None or left > 0:
            try:
                if ahead is None or ahead[1] != self._epoch:
                    ahead = (await self._send(make(frm, limit_for(left))), self._epoch)
                page = core.check_reply(await self._wait(ahead[0]), "read_stream")
            except (errors.ClosedError, errors.TimeoutError):
                ahead = None
                if resumes >= _READ_RESUMES:
                    raise
                resumes += 1
                continue
            ahead = None
            events = page.events
            n = len(events)
            if not page.end_of_stream and n and (left is None or left > n):
                ahead = (await self._send(make(page.next, limit_for(
                    None if left is None else left - n))), self._epoch)
            for m in events:
                key = m.revision if by_revision else m.position
                frm = (key - 1) if backward else (key + 1)
                yield RecordedEvent(m)
                if left is not None:
                    left -= 1
                    if left == 0:
                        break
            if page.end_of_stream or n == 0:
                break
            frm = page.next

    async def subscribe(self, stream: Optional[str] = None, *, category: Optional[str] = None,
                        event_type: Optional[str] = None, stream_prefix: Optional[str] = None,
                        from_start: bool = False, after: Optional[int] = None,
                        from_end: bool = False, batch_size: int = 0) -> "Subscription":
        """Subscribe (see esd.Client.subscribe); ``async for`` over the result."""
        target, name = core.subscribe_target(stream, category, event_type, stream_prefix)
        last, from_end = core.resolve_start(from_start, after, from_end)
        sub = Subscription(self, target, name, last, from_end, batch_size)
        if from_end and target == core.TARGET_STREAM:
            sub._from_end = False
            try:
                sub._last = sub._seen = (await self.stream_info(stream)).last_revision
            except errors.NotFoundError:
                pass
        await sub._subscribe_now()
        return sub


class Subscription(_SyncSubscription):
    """An asyncio catch-up subscription (see esd.client.Subscription, whose
    bookkeeping it shares): ``async for ev in sub`` yields events;
    ``items(timeout)`` also yields CaughtUp markers; ``await poll(timeout)``
    returns what arrived."""

    def __init__(self, client: Client, target, name, last, from_end, batch_size):
        super().__init__(client, target, name, last, from_end, batch_size)
        self._wake = asyncio.Event()

    def _on_push(self, kind, resp, size) -> None:
        super()._on_push(kind, resp, size)
        self._wake.set()

    def __iter__(self):
        raise TypeError("an asyncio subscription: use async for")

    async def _subscribe_now(self) -> None:
        c = self._c
        await c._ensure()
        self._check_store()
        await c._room()
        fut = c._submit(self._request())
        rid = c._next_id
        self._attach(rid)
        try:
            ok = core.check_reply(await fut, "subscribe")
        except errors.EsdError as e:
            self._refused(rid, e)
            raise
        self._subscribed(ok)

    async def _resubscribe(self) -> None:
        c = self._c
        c._subs.pop(self._id, None)
        if self._attached():
            try:
                c._submit(core.simple_request("unsubscribe", subscription_id=self._id))
            except errors.EsdError:  # pragma: no cover
                pass
        self._id = 0
        self._discard = False
        await self._subscribe_now()

    async def poll(self, timeout: Optional[float] = 0.0) -> List[object]:
        """Wait up to timeout seconds (None: until something comes); return
        the events and CaughtUp markers that arrived, in order."""
        if self._closed is not None:
            raise self._closed
        if not self._ready:
            await self._fill(timeout)
        return self._take_all()

    async def _fill(self, timeout: Optional[float]) -> bool:
        if self._closed is not None:
            raise self._closed
        c = self._c
        deadline = None if timeout is None else time.monotonic() + timeout
        beat = c._o.request_timeout
        while True:
            if self._queue:
                self._deliver()
            if self._ready:
                return True
            if self._discard or not self._attached():
                await self._resubscribe()
                continue
            now = time.monotonic()
            if now - self._last_rx >= beat:
                try:
                    await c.ping()
                except (errors.ClosedError, errors.TimeoutError):
                    pass
                self._last_rx = time.monotonic()
                continue
            until = self._last_rx + beat
            if deadline is not None:
                if now >= deadline:
                    return False
                until = min(until, deadline)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(until - now, 0.0))
            except asyncio.TimeoutError:
                pass

    async def items(self, timeout: Optional[float] = None) -> AsyncIterator[object]:
        """Yield events and CaughtUp markers; stop after timeout seconds with
        nothing (None: never). An item counts as delivered when yielded."""
        while self._ready or await self._fill(timeout):
            yield self._hand_out(self._ready.popleft())

    async def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        async for item in self.items(None):
            if isinstance(item, RecordedEvent):
                yield item

    async def close(self) -> None:
        """Unsubscribe (best effort) and forget queued pushes."""
        c = self._c
        if self._closed is None and self._attached():
            try:
                c._submit(core.simple_request("unsubscribe", subscription_id=self._id))
            except errors.EsdError:  # pragma: no cover
                pass
        self._close(errors.ClosedError("the subscription was closed"))

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
