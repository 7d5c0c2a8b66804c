"""Aggregates on top of esd.Client: rebuild state from a stream (latest
snapshot + later events), decide, append with the loaded revision as the
expectation, retry on conflict; decisions over several aggregates
committed in one transaction.

    class Counter(esd.aggregate.Aggregate):
        def __init__(self):
            self.n = 0
        def apply(self, event):
            self.n += 1

    repo = esd.aggregate.Repository(client, Counter)
    repo.execute("counter-1", lambda c: [esd.Event("Incremented")])

Design notes (the policy of libesaggregate, the C library):

- A decide function gets the state (do not change it) and returns the new
  events, or raises Refused. It may be called several times for one
  command (once per attempt), so it must be pure.
- Append: exact expectation at the loaded revision (NO_STREAM for a stream
  without events). On WrongExpectedRevisionError: wait a full-jitter
  backoff, fold the events that arrived meanwhile into every aggregate of
  the command, decide again; at most max_attempts decisions.
- A lost connection (ClosedError, TimeoutError) resends the same events
  (same ids): the server answers a retry it already stored with the
  original result (duplicate=True), so a command is never applied twice.
- Every event of one command carries one correlation id.
- Snapshots: saved after a command once snapshot_every events follow the
  last one; a snapshot of another state_format, or one restore() refuses,
  is ignored and the stream replayed: a snapshot is an optimisation, never
  a source of truth. The state after a command is folded from the events
  as the server recorded them (read back), as a replay would.
"""

import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from . import errors
from .types import NO_STREAM, Event, Expected, uuid7

__all__ = ["Aggregate", "Loaded", "Refused", "Repository", "Result"]

_READ_RESUMES = 2
_APPEND_RESENDS = 2


class Refused(errors.RefusedError):
    """A decide function refused the command: ``reason`` is a short code of
    the caller's choosing (e.g. "insufficient_funds"), ``message`` the text."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class Aggregate:
    """Base of an aggregate: subclasses set up the empty state in __init__
    (called without arguments) and fold events in apply(). For snapshots,
    override encode() and decode() and set state_format."""

    #: The version of the snapshot encoding; snapshots of another are ignored.
    state_format = 1

    def apply(self, event) -> None:
        """Fold one RecordedEvent into the state; raise (conventionally
        esd.MalformedError) on anything not understood."""
        raise NotImplementedError

    def encode(self) -> Optional[bytes]:
        """The state as snapshot bytes; None (the default) disables snapshots."""
        return None

    def decode(self, data: bytes) -> None:
        """Restore the state from snapshot bytes (on a fresh instance); raise
        ValueError or esd.MalformedError when they are not valid."""
        raise ValueError("no snapshot encoding")


@dataclass
class Loaded:
    """An aggregate as loaded: the state and where it stands."""

    aggregate: Aggregate
    stream: str
    exists: bool = False
    revision: int = 0
    from_snapshot: bool = False
    snapshot_revision: int = 0
    snapshot_ignored: bool = False
    replayed: int = 0
    has_snapshot: bool = False

    @property
    def expected(self) -> Expected:
        """The expectation of an append decided on this state."""
        return Expected.exact(self.revision) if self.exists else NO_STREAM


@dataclass
class Result:
    """The outcome of a command: ``loaded`` the aggregates after it (in the
    order of the streams), ``n_events`` appended, ``attempts`` decisions,
    ``conflicts`` met, ``duplicate`` when the append was answered as an
    already stored retry, ``snapshots_saved``."""

    loaded: List[Loaded]
    n_events: int = 0
    attempts: int = 0
    conflicts: int = 0
    duplicate: bool = False
    snapshots_saved: int = 0

    @property
    def revision(self) -> int:
        """The last revision of the first aggregate after the command."""
        return self.loaded[0].revision


class Repository:
    """A kind of aggregate (a factory, e.g. the class) bound to a client."""

    def __init__(self, client, factory: Callable[[], Aggregate], *, snapshot_every: int = 100,
                 max_attempts: int = 16, backoff_initial: float = 0.002,
                 backoff_max: float = 0.1, read_snapshots: bool = True, page_size: int = 0):
        if max_attempts < 1 or backoff_initial < 0 or backoff_max < backoff_initial:
            raise errors.InvalidArgumentError("max_attempts >= 1, 0 <= backoff_initial <= max")
        self.client = client
        self.factory = factory
        self.snapshot_every = snapshot_every
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.read_snapshots = read_snapshots
        self.page_size = page_size
        self._rng = random.Random()

    # ----------------------------------------------------------- loading --

    def _fold(self, ld: Loaded, max_count: Optional[int] = None) -> None:
        frm = ld.revision + 1 if ld.exists else 0
        resumes = 0
        while True:
            try:
                for ev in self.client.read_stream(ld.stream, frm, max_count=max_count,
                                                  page_size=self.page_size):
                    want = ld.revision + 1 if ld.exists else 0
                    if ev.revision != want:
                        raise errors.MalformedError(
                            f"{ld.stream}: revision {ev.revision} arrived where {want} was due")
                    try:
                        ld.aggregate.apply(ev)
                    except errors.EsdError:
                        raise
                    except Exception as e:
                        raise errors.MalformedError(
                            f"{ld.stream}: apply refused revision {ev.revision} ({ev.type}): "
                            f"{e}") from None
                    ld.exists = True
                    ld.revision = ev.revision
                    ld.replayed += 1
                    frm = ev.revision + 1
                    if max_count is not None:
                        max_count -= 1
                        if max_count == 0:
                            return
                return
            except errors.NotFoundError:
                if ld.exists:
                    raise errors.MalformedError(
                        f"{ld.stream}: the stream vanished after revision {ld.revision}") from None
                return
            except (errors.ClosedError, errors.TimeoutError):
                if resumes >= _READ_RESUMES:
                    raise
                resumes += 1

    def load(self, stream: str) -> Loaded:
        """Load an aggregate: its latest usable snapshot, then every later event."""
        ld = Loaded(self.factory(), stream)
        if self.read_snapshots and type(ld.aggregate).encode is not Aggregate.encode:
            try:
                snap = self.client.load_snapshot(stream)
            except (errors.NotFoundError, errors.CorruptError) as e:
                snap = None
                ld.snapshot_ignored = isinstance(e, errors.CorruptError)
            if snap is not None:
                if snap.state_format != ld.aggregate.state_format:
                    ld.snapshot_ignored = True
                else:
                    try:
                        ld.aggregate.decode(snap.data)
                        ld.exists = True
                        ld.revision = snap.revision
                        ld.from_snapshot = ld.has_snapshot = True
                        ld.snapshot_revision = snap.revision
                    except (ValueError, errors.EsdError):
                        ld.snapshot_ignored = True
                        ld.aggregate = self.factory()
        self._fold(ld)
        return ld

    def _save_snapshot(self, ld: Loaded) -> bool:
        data = ld.aggregate.encode()
        if data is None:
            return False
        self.client.save_snapshot(ld.stream, ld.revision, data, ld.aggregate.state_format)
        ld.has_snapshot = True
        ld.snapshot_revision = ld.revision
        return True

    def snapshot(self, stream: str):
        """Save a snapshot now; returns (revision, saved) — saved is False when
        the latest snapshot was already current. NotFoundError: no events."""
        ld = self.load(stream)
        if not ld.exists:
            raise errors.NotFoundError(f"{stream} has no events")
        if ld.from_snapshot and ld.replayed == 0:
            return ld.revision, False
        if not self._save_snapshot(ld):
            raise errors.InvalidArgumentError("this kind of aggregate has no snapshot encoding")
        return ld.revision, True

    # --------------------------------------------------------- executing --

    def execute(self, stream: str, decide: Callable[[Aggregate], Sequence[Event]]) -> Result:
        """Load, decide, append with the loaded revision, retrying on conflict.
        Raises Refused (nothing appended), WrongExpectedRevisionError (every
        attempt met a concurrent change), and the client's errors."""
        return self.execute_many([stream], lambda a: [decide(a)])

    def execute_many(self, streams: Sequence[str],
                     decide: Callable[..., Sequence[Sequence[Event]]]) -> Result:
        """Load every aggregate, decide once over all of them (decide(*aggs)
        returns one list of events per stream), append every list in one
        transaction, each with its own loaded revision as expectation."""
        if not streams or len(set(streams)) != len(streams):
            raise errors.InvalidArgumentError("streams must be distinct and at least one")
        loaded = [self.load(s) for s in streams]
        res = Result(loaded)
        corr = uuid7()
        while True:
            res.attempts += 1
            out = decide(*[ld.aggregate for ld in loaded])
            if len(out) != len(loaded):
                raise errors.InvalidArgumentError("decide returns one list of events per stream")
            try:
                appended = self._commit(loaded, out, corr, res)
                break
            except errors.WrongExpectedRevisionError:
                res.conflicts += 1
                if res.attempts >= self.max_attempts:
                    raise
                window = self.backoff_initial * (2 ** (res.conflicts - 1))
                time.sleep(self._rng.uniform(0, min(window, self.backoff_max)))
                for ld in loaded:
                    self._fold(ld)
        for ld, (n, last) in zip(loaded, appended):
            if n == 0:
                continue
            since = last - ld.snapshot_revision if ld.has_snapshot else last + 1
            count = last - ld.revision if ld.exists else last + 1
            self._fold(ld, count)
            if ld.revision != last:
                raise errors.MalformedError(
                    f"{ld.stream}: read back to {ld.revision}, appended up to {last}")
            if self.snapshot_every and since >= self.snapshot_every:
                try:
                    if self._save_snapshot(ld):
                        res.snapshots_saved += 1
                except errors.EsdError:
                    pass  # the next command tries again
        return res

    def _commit(self, loaded, out, corr: uuid.UUID, res: Result):
        parts = []
        for ld, evs in zip(loaded, out):
            evs = list(evs)
            for e in evs:
                e.correlation_id = corr
            parts.append((ld, evs))
        todo = [(ld.stream, ld.expected, evs) for ld, evs in parts if evs]
        appended = [(0, 0)] * len(parts)
        if not todo:
            return appended
        resends = 0
        while True:
            try:
                if len(todo) == 1:
                    s, exp, evs = todo[0]
                    results = [self.client.append(s, evs, exp)]
                else:
                    results = self.client.transaction(todo)
                break
            except (errors.ClosedError, errors.TimeoutError):
                if resends >= _APPEND_RESENDS:
                    raise
                resends += 1
        it = iter(results)
        for i, (ld, evs) in enumerate(parts):
            if evs:
                r = next(it)
                appended[i] = (len(evs), r.last_revision)
                res.n_events += len(evs)
                res.duplicate = res.duplicate or r.duplicate
        return appended
