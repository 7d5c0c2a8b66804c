"""A member of a consumer group on the blocking client (Client.join_group).

Design notes: a membership belongs to its client's connection and is known
to the server by the id of its JoinGroup request; the server pushes
GroupEvents (at most one event of a stream in flight across the group) and
GroupLeft with that id, and the client's reader queues them here like a
subscription's pushes. When the connection is lost the server takes the
member's events back and delivers them again (to any member); the next
``next_batch`` reconnects and joins again with the same name,
``max_in_flight`` and label, so acks of events received before that fail
with NotInFlightError and those events come again: at-least-once. An ack
that is answered settles the event; a copy of it already queued (pushed
again after its ack timeout, just before the ack arrived) is dropped, so
nothing reaches the caller after its ack was answered.

A batch queued here may pass its ack timeout while the caller works on an
earlier one; the server then gives those events to another member and
pushes a GroupRevoked naming them. It is applied at once to the batches
queued at that moment (not to later pushes, which may bring the same
position again), and ``next_batch`` reads what has arrived without waiting
before it hands out a queued batch, so a revoked event is never handed out;
events already handed out stay with the caller (their ack then raises
NotInFlightError). docs/groups.md has the group's rules.
"""

import time
from collections import deque
from typing import Iterable, List, Optional, Union

from . import _core as core
from . import errors
from .types import RecordedEvent

__all__ = ["GroupMember"]

_Positions = Iterable[Union[int, RecordedEvent]]

#: Reads without waiting before a queued batch is handed out.
_DRAIN_READS = 64


def _positions(items: _Positions) -> List[int]:
    out = []
    for x in items:
        if isinstance(x, RecordedEvent):
            out.append(x.position)
        elif isinstance(x, int) and not isinstance(x, bool) and x > 0:
            out.append(x)
        else:
            raise errors.InvalidArgumentError(
                f"a position is a positive int or a RecordedEvent, not {x!r}")
    return out


class GroupMember:
    """A member of a consumer group (see Client.join_group).

    ``next_batch(timeout)`` returns the next events to process (an empty
    list after ``timeout`` seconds with none); ``ack(events)`` settles them,
    ``nack(events, action, reason)`` hands them back ("retry", "park" or
    "skip"); both take events or positions, all or nothing. ``leave()``
    (or leaving the ``with`` block) ends the membership: its events in
    flight go to the other members. Errors: GroupNotFoundError when the
    group was deleted (the membership then ends), ConnectionError /
    CircuitOpenError when the connection cannot be remade this time (call
    again), NotInFlightError for an ack of an event taken back.
    """

    def __init__(self, client, name: str, max_in_flight: int, consumer: str):
        self._c = client
        self._name = name
        self._want = max_in_flight
        self._consumer = consumer
        self._id = 0
        self._epoch = -1
        self._queue = deque()  # GroupEvents messages, or the error that ended it
        self._closed: Optional[errors.EsdError] = None
        self.max_in_flight = 0  #: what the server granted at the last join
        self.checkpoint = 0  #: the group's checkpoint at the last join
        self._last_rx = time.monotonic()
        self.revokes = 0  #: GroupRevoked pushes received since the member was made
        self.revoked_dropped = 0  #: queued events they dropped before being handed out

    def __enter__(self) -> "GroupMember":
        return self

    def __exit__(self, *exc) -> None:
        self.leave()

    @property
    def name(self) -> str:
        """The group's name."""
        return self._name

    def _attached(self) -> bool:
        c = self._c
        return c.connected and self._id != 0 and self._epoch == c._epoch

    def _join(self) -> None:
        c = self._c
        c._ensure()
        rid = c._submit(core.join_group_request(self._name, self._want, self._consumer))
        self._id = rid
        self._epoch = c._epoch
        c._subs[rid] = self
        self._queue.clear()
        try:
            ok = core.check_reply(c._wait(rid), "join_group")
        except errors.EsdError as e:
            c._subs.pop(rid, None)
            self._id = 0
            if not isinstance(e, core.TRANSIENT):
                self._closed = e
            raise
        self.max_in_flight = ok.max_in_flight
        self.checkpoint = ok.checkpoint
        self._last_rx = time.monotonic()

    def _on_push(self, kind: str, resp, size: int) -> None:
        self._last_rx = time.monotonic()
        if kind == "group_events":
            self._queue.append(resp.group_events.events)
        elif kind == "group_revoked":
            self.revokes += 1
            self.revoked_dropped += self._drop_queued(set(resp.group_revoked.positions))
        elif kind == "group_left":
            self._queue.append(errors.make_error(
                resp.group_left.reason,
                f"the server ended the membership: {resp.group_left.message}"))

    def next_batch(self, timeout: Optional[float] = None) -> List[RecordedEvent]:
        """The next events to process, at most one per stream; [] when none
        came within ``timeout`` seconds (None: wait until some come)."""
        if self._closed is not None:
            raise self._closed
        c = self._c
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._queue and self._attached():
                # Revokes that reached the connection come first: read what
                # has arrived without waiting (a bounded number of reads).
                for _ in range(_DRAIN_READS):
                    if not c._pump(0) or not self._attached():
                        break
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, errors.EsdError):
                    self._end(item)
                    raise item
                if item:
                    return [RecordedEvent(m) for m in item]
            if not self._attached():
                self._join()
                continue
            if not c._await_pushes(self, deadline):
                return []

    def _settle(self, items: _Positions, action: Optional[str], reason: str) -> int:
        if self._closed is not None:
            raise self._closed
        positions = _positions(items)
        if not self._attached():
            raise errors.NotInFlightError(
                "the connection was remade since these events were received: the server "
                "took them back and delivers them again")
        c = self._c
        req = core.settle_request(self._id, positions, action, reason)
        done = core.check_reply(c._wait(c._submit(req)), "group_nack" if action else "group_ack")
        if action in (None, "skip", "park"):
            self._drop_queued(set(positions))
        return done.count

    def _drop_queued(self, positions: set) -> int:
        """Drop queued copies of these events: settled ones (pushed again
        after their ack timeout, before the ack was answered) or revoked ones.
        Returns how many were dropped."""
        dropped = 0
        for i, item in enumerate(self._queue):
            if isinstance(item, errors.EsdError):
                continue
            keep = [m for m in item if m.position not in positions]
            if len(keep) != len(item):
                dropped += len(item) - len(keep)
                self._queue[i] = keep
        return dropped

    def ack(self, events: _Positions) -> int:
        """Acknowledge events (RecordedEvent objects or positions), all or
        nothing: each must be in flight with this member. Answered once
        stored: an acknowledged event is never delivered again. Returns how
        many were settled."""
        return self._settle(events, None, "")

    def nack(self, events: _Positions, action: str = "retry", reason: str = "") -> int:
        """Hand events back: "retry" delivers them again (counting against
        the group's max_retries, then parked), "park" parks them now with
        ``reason``, "skip" treats them as handled."""
        return self._settle(events, action, reason)

    def _end(self, exc: errors.EsdError) -> None:
        self._closed = exc
        self._c._subs.pop(self._id, None)
        self._id = 0
        self._queue.clear()

    def leave(self) -> None:
        """End the membership: the events in flight with it go to the other
        members. Idempotent."""
        if self._closed is not None:
            return
        c = self._c
        if self._attached():
            try:
                c._submit(core.simple_request("unsubscribe", subscription_id=self._id))
                c._abandon(c._next_id)
                c._flush()
            except errors.EsdError:  # pragma: no cover - dropped meanwhile
                pass
        self._end(errors.ClosedError("the member left the group"))
