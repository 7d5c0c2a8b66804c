"""The Aggregate base and Repository against a real esd: rehydration from
snapshots and events, retries on conflict, transactions, refusals."""

import json
import threading
import unittest

import harness

import esd
from esd.aggregate import Aggregate, Refused, Repository


class Counter(Aggregate):
    state_format = 2

    def __init__(self):
        self.n = 0

    def apply(self, event):
        if event.type != "Inc":
            raise ValueError(f"unknown {event.type}")
        self.n += 1

    def encode(self):
        return json.dumps({"n": self.n}).encode()

    def decode(self, data):
        o = json.loads(data)
        if not isinstance(o.get("n"), int):
            raise ValueError("bad snapshot")
        self.n = o["n"]


class NoSnap(Aggregate):
    def __init__(self):
        self.n = 0

    def apply(self, event):
        self.n += 1


def inc(c):
    return [esd.Event("Inc")]


class Aggregates(harness.EsdTestCase):

    def test_execute_load_and_snapshots(self):
        s = self.stream()
        repo = Repository(self.c, Counter, snapshot_every=3)
        ld = repo.load(s)
        self.assertFalse(ld.exists)
        self.assertEqual(ld.expected, esd.NO_STREAM)
        r = repo.execute(s, inc)
        self.assertEqual((r.revision, r.n_events, r.attempts, r.conflicts), (0, 1, 1, 0))
        for _ in range(4):
            r = repo.execute(s, inc)
        self.assertEqual(r.loaded[0].aggregate.n, 5)
        ld = repo.load(s)
        self.assertTrue(ld.from_snapshot)
        self.assertEqual((ld.aggregate.n, ld.revision, ld.snapshot_revision), (5, 4, 2))
        self.assertEqual(ld.replayed, 2)
        self.assertEqual(repo.snapshot(s), (4, True))
        self.assertEqual(repo.snapshot(s), (4, False))
        full = Repository(self.c, Counter, read_snapshots=False).load(s)
        self.assertEqual((full.aggregate.n, full.replayed, full.from_snapshot), (5, 5, False))
        # A snapshot of another format, or one decode() refuses, is ignored.
        self.c.save_snapshot(s, 4, b'{"n": 99}', state_format=7)
        ld = repo.load(s)
        self.assertTrue(ld.snapshot_ignored)
        self.assertEqual(ld.aggregate.n, 5)
        self.c.save_snapshot(s, 4, b'{"x": 1}', state_format=2)
        ld = repo.load(s)
        self.assertTrue(ld.snapshot_ignored)
        self.assertEqual(ld.aggregate.n, 5)
        with self.assertRaises(esd.NotFoundError):
            repo.snapshot(self.stream("none"))
        nos = Repository(self.c, NoSnap)
        nos.execute(s + "n", inc)
        with self.assertRaises(esd.InvalidArgumentError):
            nos.snapshot(s + "n")
        self.assertEqual(nos.load(s).aggregate.n, 5)

    def test_refusals_and_bad_history(self):
        s = self.stream()
        repo = Repository(self.c, Counter)

        def refuse(c):
            raise Refused("nope", "not today")
        with self.assertRaises(Refused) as cm:
            repo.execute(s, refuse)
        self.assertEqual((cm.exception.reason, cm.exception.message), ("nope", "not today"))
        self.assertIsInstance(cm.exception, esd.RefusedError)
        with self.assertRaises(esd.NotFoundError):
            self.c.stream_info(s)
        self.assertEqual(repo.execute(s, lambda c: []).n_events, 0)
        self.c.append(s, [esd.Event("Other")])
        with self.assertRaises(esd.MalformedError) as cm:
            repo.load(s)
        self.assertIn("apply refused revision 0", cm.exception.message)
        with self.assertRaises(esd.InvalidArgumentError):
            repo.execute_many([s, s], lambda a, b: [[], []])
        with self.assertRaises(esd.InvalidArgumentError):
            repo.execute_many([self.stream("x")], lambda a: [[], []])
        with self.assertRaises(esd.InvalidArgumentError):
            Repository(self.c, Counter, max_attempts=0)

    def test_conflicts_are_retried(self):
        s = self.stream()
        Repository(self.c, Counter).execute(s, inc)
        n_threads, per = 4, 25
        conflicts = []

        def work():
            with esd.Client(self.server.address) as c:
                repo = Repository(c, Counter, max_attempts=1000, snapshot_every=10)
                for _ in range(per):
                    conflicts.append(repo.execute(s, inc).conflicts)
        ts = [threading.Thread(target=work) for _ in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len(conflicts), n_threads * per)
        self.assertEqual(self.c.stream_info(s).event_count, 1 + n_threads * per)

    def test_attempts_run_out(self):
        s = self.stream()
        repo = Repository(self.c, Counter, max_attempts=2, backoff_initial=0,
                          backoff_max=0)
        calls = []

        def meddle(c):
            # Someone else appends between every load and append.
            calls.append(1)
            self.c.append(s, [esd.Event("Inc")])
            return [esd.Event("Inc")]
        with self.assertRaises(esd.WrongExpectedRevisionError):
            repo.execute(s, meddle)
        self.assertEqual(len(calls), 2)

    def test_transaction_over_two_aggregates(self):
        a, b = self.stream("a"), self.stream("b")
        repo = Repository(self.c, Counter)
        r = repo.execute_many([a, b], lambda x, y: [[esd.Event("Inc")],
                                                    [esd.Event("Inc"), esd.Event("Inc")]])
        self.assertEqual([ld.aggregate.n for ld in r.loaded], [1, 2])
        self.assertEqual(r.n_events, 3)
        evs = list(self.c.read_stream(a)) + list(self.c.read_stream(b))
        self.assertEqual(len({e.correlation_id for e in evs}), 1)
        r = repo.execute_many([a, b], lambda x, y: [[], [esd.Event("Inc")]])
        self.assertEqual([ld.revision for ld in r.loaded], [0, 2])


if __name__ == "__main__":
    unittest.main()
