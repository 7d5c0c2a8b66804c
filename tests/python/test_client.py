"""The blocking client against a real esd: every request, its errors,
pipelining, subscriptions across reconnects and restarts, the resilience
policy (with a fake server for the failure paths)."""

import socket
import threading
import unittest
import uuid

import harness
from fake import FakeServer

import esd
from esd import _core as core


class Requests(harness.EsdTestCase):
    # Small limits, so that paging and the limit errors are reachable.
    server_args = ("--max-event-bytes", "1024", "--max-events-per-append", "100",
                   "--max-page", "50")

    def test_ping_stats_and_server_info(self):
        self.assertFalse(self.c.connected)
        self.assertIsNone(self.c.server_info)
        self.assertGreaterEqual(self.c.ping(b"hello"), 0)
        self.assertTrue(self.c.connected)
        info = self.c.server_info
        self.assertEqual(info.protocol_version, 1)
        self.assertEqual(info.limits.max_page_size, 50)
        self.assertEqual(info.limits.max_events_per_append, 100)
        self.assertEqual(info.sync_mode, 1)
        self.assertIn("max_in_flight", info.as_dict()["limits"])
        s = self.stream()
        self.c.append(s, [esd.Event("T")])
        st = self.c.stats()
        self.assertGreaterEqual(st.event_count, 1)
        self.assertGreaterEqual(st.connections, 1)
        self.assertEqual(st.store_id, info.store_id)
        self.assertIn("Stats(", repr(st))
        with self.assertRaises(AttributeError):
            st.nothing  # noqa: B018
        with self.assertRaises(AttributeError):
            st.head_position = 1
        self.assertEqual(self.c.breaker_state, esd.BREAKER_CLOSED)
        self.assertEqual(self.c.in_flight, 0)

    def test_append_expectations(self):
        s = self.stream()
        e0 = esd.Event("Opened", {"owner": "Alice"})
        self.assertEqual(e0.id.version, 7)
        r = self.c.append(s, [e0], expected=esd.NO_STREAM)
        self.assertEqual((r.first_revision, r.last_revision), (0, 0))
        self.assertFalse(r.duplicate)
        r = self.c.append(s, [esd.Event("A"), esd.Event("B")], expected=esd.STREAM_EXISTS)
        self.assertEqual((r.first_revision, r.last_revision), (1, 2))
        self.assertEqual(r.last_position, r.first_position + 1)
        r = self.c.append(s, [esd.Event("C")], expected=2)
        self.assertEqual(r.last_revision, 3)
        r = self.c.append(s, [esd.Event("D")], expected=esd.Expected.exact(3))
        self.assertEqual(r.last_revision, 4)
        r = self.c.append(s, [esd.Event("E")])  # ANY
        self.assertEqual(r.last_revision, 5)
        for exp, actual in ((esd.NO_STREAM, 5), (3, 5)):
            with self.assertRaises(esd.WrongExpectedRevisionError) as cm:
                self.c.append(s, [esd.Event("X")], expected=exp)
            e = cm.exception
            self.assertEqual(e.code, 9)
            self.assertEqual(e.name, "WRONG_EXPECTED_REVISION")
            self.assertEqual(len(e.conflicts), 1)
            self.assertEqual(e.conflicts[0].stream, s)
            self.assertEqual(e.conflicts[0].expected, esd.Expected.of(exp))
            self.assertTrue(e.conflicts[0].actual_exists)
            self.assertEqual(e.conflicts[0].actual_revision, actual)
        with self.assertRaises(esd.WrongExpectedRevisionError) as cm:
            self.c.append(self.stream("none"), [esd.Event("X")], expected=esd.STREAM_EXISTS)
        self.assertFalse(cm.exception.conflicts[0].actual_exists)
        self.assertIsNone(cm.exception.conflicts[0].actual_revision)
        ev = next(iter(self.c.read_stream(s)))
        self.assertEqual(ev.id, e0.id)
        self.assertEqual(ev.json(), {"owner": "Alice"})
        self.assertEqual(ev.content_type, "application/json")

    def test_event_fields_round_trip(self):
        s = self.stream()
        corr, caus = uuid.uuid4(), uuid.uuid4()
        e = esd.Event("T", "text", metadata=b"\x00m", content_type="text/plain",
                      id=str(uuid.uuid4()), correlation_id=corr.bytes, causation_id=caus)
        r = self.c.append(s, [e])
        (got,) = list(self.c.read_stream(s))
        self.assertEqual((got.stream, got.revision, got.position), (s, 0, r.first_position))
        self.assertEqual((got.id, got.type, got.data, got.metadata, got.content_type),
                         (e.id, "T", b"text", b"\x00m", "text/plain"))
        self.assertEqual((got.correlation_id, got.causation_id), (corr, caus))
        self.assertGreater(got.recorded_at_us, 0)
        self.assertIn("RecordedEvent(", repr(got))
        (plain,) = list(self.c.read_stream(s, 0))
        self.assertIsNotNone(plain)
        s2 = self.stream()
        self.c.append(s2, [esd.Event("U")])
        (u,) = list(self.c.read_stream(s2))
        self.assertIsNone(u.correlation_id)
        self.assertIsNone(u.causation_id)
        self.assertEqual((u.data, u.content_type), (b"", ""))

    def test_idempotent_retry_and_idempotency_conflict(self):
        s = self.stream()
        evs = [esd.Event("A"), esd.Event("B")]
        first = self.c.append(s, evs, expected=esd.NO_STREAM)
        again = self.c.append(s, evs, expected=esd.NO_STREAM)
        self.assertTrue(again.duplicate)
        self.assertEqual((again.first_position, again.last_position),
                         (first.first_position, first.last_position))
        self.assertEqual(len(list(self.c.read_stream(s))), 2)
        with self.assertRaises(esd.IdempotencyConflictError):
            self.c.append(self.stream(), [evs[0]])

    def test_append_argument_errors(self):
        cases = [
            ("", [esd.Event("T")], esd.InvalidStreamIdError),
            ("$reserved", [esd.Event("T")], esd.ReservedStreamError),
            ("bad\x01id", [esd.Event("T")], esd.InvalidStreamIdError),
            (self.stream(), [esd.Event("")], esd.InvalidEventTypeError),
            (self.stream(), [esd.Event("T", b"x" * 2000)], esd.TooLargeError),
            (self.stream(), [esd.Event("T") for _ in range(101)], esd.TooManyEventsError),
            (self.stream(), [], esd.InvalidArgumentError),
        ]
        for stream, events, exc in cases:
            with self.subTest(exc=exc.__name__):
                with self.assertRaises(exc) as cm:
                    self.c.append(stream, events)
                self.assertIsInstance(cm.exception, esd.EsdError)
                self.assertIn(cm.exception.name, str(cm.exception))
        with self.assertRaises(TypeError):
            self.c.append(self.stream(), ["not an event"])
        with self.assertRaises(TypeError):
            self.c.append(1, [esd.Event("T")])
        with self.assertRaises(TypeError):
            self.c.append(self.stream(), [esd.Event("T")], expected="3")
        # Still usable after every refusal.
        self.assertEqual(self.c.append(self.stream(), [esd.Event("T")]).first_revision, 0)

    def test_request_over_the_frame_limit_is_refused_before_sending(self):
        self.c.connect()
        with self.assertRaises(esd.TooLargeError) as cm:
            self.c.append(self.stream(), [esd.Event("T", b"x" * (17 << 20))])
        self.assertIn("frame limit", cm.exception.message)
        self.c.ping()

    def test_transaction(self):
        a, b = self.stream("a"), self.stream("b")
        res = self.c.transaction([(a, esd.NO_STREAM, [esd.Event("W")]),
                                  (b, esd.NO_STREAM, [esd.Event("D"), esd.Event("D")])])
        self.assertEqual([(r.first_revision, r.last_revision) for r in res], [(0, 0), (0, 1)])
        with self.assertRaises(esd.WrongExpectedRevisionError) as cm:
            self.c.transaction([(a, 5, [esd.Event("W")]), (b, esd.NO_STREAM, [esd.Event("D")])])
        got = {c.stream: c for c in cm.exception.conflicts}
        self.assertEqual(set(got), {a, b})
        self.assertEqual(got[a].actual_revision, 0)
        self.assertEqual(got[b].actual_revision, 1)
        self.assertEqual(self.c.stream_info(a).event_count, 1)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.transaction([])
        with self.assertRaises(TypeError):
            self.c.transaction([(a, [esd.Event("W")])])

    def test_read_stream_paging_directions_and_limits(self):
        s = self.stream()
        for i in range(0, 130, 10):
            self.c.append(s, [esd.Event("T", str(j)) for j in range(i, i + 10)])
        fwd = list(self.c.read_stream(s))  # pages of at most 50
        self.assertEqual([e.revision for e in fwd], list(range(130)))
        self.assertEqual([e.data for e in fwd[:3]], [b"0", b"1", b"2"])
        back = list(self.c.read_stream(s, backward=True))
        self.assertEqual([e.revision for e in back], list(range(129, -1, -1)))
        self.assertEqual([e.revision for e in self.c.read_stream(s, 120)], list(range(120, 130)))
        self.assertEqual([e.revision for e in self.c.read_stream(s, 5, backward=True)],
                         [5, 4, 3, 2, 1, 0])
        self.assertEqual([e.revision for e in self.c.read_stream(s, 10, max_count=60,
                                                                 page_size=7)],
                         list(range(10, 70)))
        self.assertEqual(len(list(self.c.read_stream(s, max_count=55))), 55)
        self.assertEqual(list(self.c.read_stream(s, 500)), [])
        it = self.c.read_stream(s, page_size=10)
        self.assertEqual(next(it).revision, 0)
        it.close()  # an abandoned iterator leaves the client usable
        self.c.ping()
        with self.assertRaises(esd.NotFoundError):
            next(iter(self.c.read_stream(self.stream("missing"))))
        with self.assertRaises(esd.InvalidStreamIdError):
            next(iter(self.c.read_stream("")))

    def test_read_all_with_filters(self):
        tag = self.stream("cat").replace("-", "_")
        other = tag + "x"
        self.c.append(f"{tag}-1", [esd.Event("Opened"), esd.Event("Moved")])
        self.c.append(f"{other}-2", [esd.Event("Opened")])
        self.c.append(f"{tag}-3", [esd.Event("Moved")])
        by_cat = [(e.stream, e.type) for e in self.c.read_all(category=tag)]
        self.assertEqual(by_cat, [(f"{tag}-1", "Opened"), (f"{tag}-1", "Moved"),
                                  (f"{tag}-3", "Moved")])
        by_prefix = [e.stream for e in self.c.read_all(stream_prefix=tag)]
        self.assertEqual(sorted(set(by_prefix)), sorted({f"{tag}-1", f"{other}-2",
                                                         f"{tag}-3"}))
        moved = [e for e in self.c.read_all(event_type="Moved") if e.stream.startswith(tag)]
        self.assertEqual(len(moved), 2)
        everything = list(self.c.read_all())
        positions = [e.position for e in everything]
        self.assertEqual(positions, list(range(1, len(positions) + 1)))
        back = [e.position for e in self.c.read_all(backward=True, max_count=3)]
        self.assertEqual(back, positions[::-1][:3])
        self.assertEqual([e.position for e in self.c.read_all(2, max_count=2)], [2, 3])
        with self.assertRaises(esd.InvalidArgumentError):
            next(iter(self.c.read_all(category="a", event_type="b")))
        with self.assertRaises(esd.InvalidArgumentError):
            next(iter(self.c.read_all(category="")))

    def test_stream_info_and_list(self):
        tag = self.stream("list")
        names = [f"{tag}-{i}" for i in range(5)]
        for n in names:
            self.c.append(n, [esd.Event("T"), esd.Event("T")])
        info = self.c.stream_info(names[0])
        self.assertEqual((info.stream, info.last_revision, info.event_count),
                         (names[0], 1, 2))
        self.assertEqual(info.last_position, info.first_position + 1)
        self.assertGreaterEqual(info.updated_us, info.created_us)
        with self.assertRaises(esd.NotFoundError):
            self.c.stream_info(self.stream("missing"))
        self.assertEqual([i.stream for i in self.c.list_streams(prefix=tag)], names)
        self.assertEqual([i.stream for i in self.c.list_streams(prefix=tag, limit=3)],
                         names[:3])
        self.assertEqual([i.stream for i in self.c.list_streams(prefix=tag, after=names[2])],
                         names[3:])
        self.assertEqual(list(self.c.list_streams(prefix=tag + "zzz")), [])
        self.assertEqual(list(self.c.list_streams(prefix=tag, limit=0)), [])

    def test_snapshots(self):
        s = self.stream()
        with self.assertRaises(esd.NotFoundError):
            self.c.load_snapshot(s)
        with self.assertRaises(esd.NotFoundError):
            self.c.save_snapshot(s, 0, b"state")
        self.c.append(s, [esd.Event("T"), esd.Event("T")])
        self.c.save_snapshot(s, 1, b"state-1", state_format=3)
        snap = self.c.load_snapshot(s)
        self.assertEqual((snap.stream, snap.revision, snap.state_format, snap.data),
                         (s, 1, 3, b"state-1"))
        self.assertGreater(snap.saved_at_us, 0)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.save_snapshot(s, 7, b"beyond")

    def test_pipelining_10000_appends(self):
        s = self.stream()
        handles = [self.c.append_async(s, [esd.Event("T", str(i))]) for i in range(10000)]
        self.assertGreater(self.c.in_flight, 0)
        self.c.flush()
        results = [h.result() for h in handles]
        self.assertEqual([r.first_revision for r in results], list(range(10000)))
        positions = [r.first_position for r in results]
        self.assertEqual(positions, sorted(set(positions)))
        self.assertEqual(handles[5].result(), results[5])  # kept
        self.assertGreater(handles[0].request_id, 0)
        got = [e.data for e in self.c.read_stream(s)]
        self.assertEqual(got, [str(i).encode() for i in range(10000)])
        # Results may be collected in any order, or not at all.
        hs = [self.c.append_async(s, [esd.Event("T")]) for _ in range(10)]
        self.assertEqual(hs[9].result().first_revision, 10009)
        del hs
        self.assertEqual(self.c.append(s, [esd.Event("T")]).first_revision, 10010)

    def test_max_pending(self):
        c = esd.Client(self.server.address, max_pending=2)
        self.addCleanup(c.close)
        s = self.stream()
        h1 = c.append_async(s, [esd.Event("T")])
        h2 = c.append_async(s, [esd.Event("T")])
        with self.assertRaises(esd.TooManyRequestsError):
            c.append_async(s, [esd.Event("T")])
        self.assertEqual((h1.result().first_revision, h2.result().first_revision), (0, 1))

    def test_close_fails_requests_in_flight_and_next_call_reconnects(self):
        s = self.stream()
        h = self.c.append_async(s, [esd.Event("T")])
        self.c.close()
        with self.assertRaises(esd.ClosedError):
            h.result()
        self.assertFalse(self.c.connected)
        self.c.ping()
        self.assertTrue(self.c.connected)


class Subscriptions(harness.EsdTestCase):

    def collect(self, sub, n, timeout=30):
        """The next n events of sub (markers left out)."""
        out = []
        for item in sub.items(timeout):
            if isinstance(item, esd.RecordedEvent):
                out.append(item)
                if len(out) == n:
                    break
        return out

    def test_catch_up_then_live_on_a_stream(self):
        s = self.stream()
        self.c.append(s, [esd.Event("T", str(i)) for i in range(5)])
        with self.c.subscribe(s, batch_size=2) as sub:
            self.assertIsNone(sub.last)
            items = []
            for item in sub.items(30):
                items.append(item)
                if isinstance(item, esd.CaughtUp):
                    break
            self.assertEqual([e.revision for e in items[:-1]], [0, 1, 2, 3, 4])
            self.assertTrue(sub.caught_up)
            self.assertIn("CaughtUp(", repr(items[-1]))
            self.c.append(s, [esd.Event("T", "live")])
            (live,) = self.collect(sub, 1)
            self.assertEqual((live.revision, live.data), (5, b"live"))
            self.assertEqual(sub.last, 5)
            self.assertEqual(sub.poll(0), [])

    def test_targets_and_starts(self):
        tag = self.stream("cat").replace("-", "_")
        self.c.append(f"{tag}-1", [esd.Event("Ta"), esd.Event("Tb")])
        self.c.append(f"{tag}-2", [esd.Event("Ta")])
        head = self.c.stats().head_position
        cat = self.c.subscribe(category=tag)
        self.assertEqual([e.stream for e in self.collect(cat, 3)],
                         [f"{tag}-1", f"{tag}-1", f"{tag}-2"])
        pre = self.c.subscribe(stream_prefix=f"{tag}-2")
        self.assertEqual([e.stream for e in self.collect(pre, 1)], [f"{tag}-2"])
        typ = self.c.subscribe(event_type="Tb", after=head - 3)
        self.assertEqual([e.type for e in self.collect(typ, 1)], ["Tb"])
        allsub = self.c.subscribe(after=head - 1)
        self.assertEqual([e.position for e in self.collect(allsub, 1)], [head])
        end = self.c.subscribe(from_end=True)
        self.assertEqual(end.last, head)
        send = self.c.subscribe(f"{tag}-1", from_end=True)
        self.assertEqual(send.last, 1)
        fresh = self.c.subscribe(self.stream("fresh"), from_end=True)
        self.assertIsNone(fresh.last)
        self.c.append(f"{tag}-1", [esd.Event("Tc")])
        self.assertEqual(self.collect(end, 1)[0].type, "Tc")
        self.assertEqual(self.collect(send, 1)[0].revision, 2)
        for sub in (cat, pre, typ, allsub, end, send, fresh):
            sub.close()
        with self.assertRaises(esd.ClosedError):
            cat.poll(0)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.subscribe(category="a", event_type="b")
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.subscribe(category="")
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.subscribe(from_start=True, from_end=True)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.subscribe(after=esd.END)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.subscribe(after=head + 1000)  # beyond the end: the server refuses
        self.c.ping()

    def test_resume_after_reconnect_without_gap_or_duplicate(self):
        s = self.stream()
        self.c.append(s, [esd.Event("T", str(i)) for i in range(100)])
        sub = self.c.subscribe(s, batch_size=7)
        got = self.collect(sub, 20)
        for round_ in range(5):
            self.c.close()  # drops the connection under the subscription
            w = esd.Client(self.server.address)
            w.append(s, [esd.Event("T", f"w{round_}-{i}") for i in range(10)])
            w.close()
            got += self.collect(sub, 10)
        got += self.collect(sub, 150 - len(got))
        self.assertEqual([e.revision for e in got], list(range(150)))
        self.assertEqual(sub.last, 149)
        sub.close()

    def test_whole_log_subscription_across_an_esd_restart(self):
        srv = harness.Esd().start()
        self.addCleanup(srv.cleanup)
        c = esd.Client(srv.address, reconnect_attempts=50, backoff_initial=0.01,
                       backoff_max=0.2, breaker_threshold=0)
        self.addCleanup(c.close)
        c.append("r-1", [esd.Event("T") for _ in range(10)])
        sub = c.subscribe()
        got = self.collect(sub, 10)
        srv.restart()
        w = esd.Client(srv.address)
        w.append("r-2", [esd.Event("T") for _ in range(10)])
        w.close()
        got += self.collect(sub, 10)
        self.assertEqual([e.position for e in got], list(range(1, 21)))
        self.assertEqual(sub.last, 20)
        srv.kill()
        with self.assertRaises(esd.ConnectionError):
            esd.Client(srv.address, reconnect_attempts=1).connect()
        self.assertIsInstance(sub, esd.Subscription)

    def test_quiet_subscription_pings(self):
        c = esd.Client(self.server.address, request_timeout=0.2)
        self.addCleanup(c.close)
        s = self.stream()
        sub = c.subscribe(s, from_end=True)
        before = c.stats().head_position
        got = sub.poll(0.7) + sub.poll(0.7)  # quiet: pinged, still subscribed
        self.assertEqual([i for i in got if isinstance(i, esd.RecordedEvent)], [])
        self.assertTrue(c.connected)
        self.c.append(s, [esd.Event("T")])
        (ev,) = self.collect(sub, 1)
        self.assertEqual((ev.revision, ev.position > before), (0, True))

    def test_server_stopping_drops_or_closes(self):
        srv = harness.Esd().start()
        self.addCleanup(srv.cleanup)
        c = esd.Client(srv.address, reconnect_attempts=1, breaker_threshold=0)
        self.addCleanup(c.close)
        sub = c.subscribe()
        sub.poll(1)
        srv.stop()
        with self.assertRaises((esd.ConnectionError, esd.ShuttingDownError, esd.ClosedError)):
            while True:
                sub.poll(5)


class Resilience(unittest.TestCase):

    def closed_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return f"127.0.0.1:{port}"

    def test_backoff_between_attempts_and_the_breaker(self):
        c = esd.Client(self.closed_port(), reconnect_attempts=3, backoff_initial=0.5,
                       backoff_max=0.8, breaker_threshold=5, breaker_reset=10)
        slept = []
        c.sleep = slept.append
        now = [1000.0]
        c.clock = lambda: now[0]
        with self.assertRaises(esd.ConnectionError) as cm:
            c.ping()
        self.assertIn("3 attempts", cm.exception.message)
        self.assertEqual(len(slept), 2)
        self.assertTrue(0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 0.8)
        with self.assertRaises(esd.ConnectionError) as cm:
            c.connect()  # 2 more failures: 5, the circuit opens
        self.assertIn("circuit breaker now open", cm.exception.message)
        self.assertEqual(c.breaker_state, esd.BREAKER_OPEN)
        with self.assertRaises(esd.CircuitOpenError):
            c.ping()
        now[0] += 10
        with self.assertRaises(esd.ConnectionError):
            c.ping()  # the half-open trial fails: open again
        self.assertEqual(c.breaker_state, esd.BREAKER_OPEN)
        srv = harness.Esd().start()
        self.addCleanup(srv.cleanup)
        c2 = esd.Client(srv.address, breaker_threshold=1)
        c2._breaker.on_failure(0)
        self.assertEqual(c2.breaker_state, esd.BREAKER_OPEN)
        c2.clock = lambda: 1e9
        c2.ping()  # the trial succeeds: closed
        self.assertEqual(c2.breaker_state, esd.BREAKER_CLOSED)
        c2.close()

    def test_breaker_policy(self):
        b = core.Breaker(2, 5.0)
        self.assertEqual(b.allow(0), (True, 0.0))
        self.assertFalse(b.on_failure(0))
        self.assertTrue(b.on_failure(1))
        ok, wait = b.allow(2)
        self.assertFalse(ok)
        self.assertAlmostEqual(wait, 4.0)
        self.assertEqual(b.allow(6), (True, 0.0))
        self.assertEqual(b.state, esd.BREAKER_HALF_OPEN)
        b.on_success()
        self.assertEqual(b.state, esd.BREAKER_CLOSED)
        off = core.Breaker(0, 1)
        for _ in range(10):
            self.assertFalse(off.on_failure(0))
        rnd = core.seed()
        for k in range(10):
            d = core.backoff_delay(0.1, 1.0, k, rnd)
            self.assertTrue(0 <= d <= min(1.0, 0.1 * 2 ** k))

    def fake(self, mode):
        f = FakeServer(mode)
        self.addCleanup(f.close)
        return f

    def test_hello_never_answered(self):
        f = self.fake("silent")
        c = esd.Client(f.address, connect_timeout=0.3, reconnect_attempts=1)
        with self.assertRaises(esd.ConnectionError) as cm:
            c.connect()
        self.assertIn("hello", cm.exception.message)

    def test_request_timeout_drops_the_connection(self):
        f = self.fake("hello_then_silent")
        c = esd.Client(f.address, request_timeout=0.3)
        c.connect()
        h = c.append_async("s", [esd.Event("T")])
        with self.assertRaises(esd.TimeoutError):
            c.ping()
        self.assertFalse(c.connected)
        with self.assertRaises(esd.ClosedError):
            h.result()

    def test_unsupported_version(self):
        f = self.fake("version2")
        with self.assertRaises(esd.UnsupportedVersionError):
            esd.Client(f.address).connect()

    def test_broken_replies(self):
        for mode, exc in (("close_mid_frame", esd.ClosedError), ("big_frame", esd.TooLargeError),
                          ("garbage", esd.MalformedError), ("wrong_kind", esd.MalformedError),
                          ("notice_close", esd.ClosedError)):
            with self.subTest(mode=mode):
                f = self.fake(mode)
                c = esd.Client(f.address, reconnect_attempts=1)
                c.connect()
                with self.assertRaises(exc) as cm:
                    c.stats()
                if mode == "notice_close":
                    self.assertIn("going away", cm.exception.message)
                c.close()

    def test_options_are_checked(self):
        for kw in ({"connect_timeout": 0}, {"reconnect_attempts": 0},
                   {"backoff_initial": 2, "backoff_max": 1}, {"breaker_threshold": -1},
                   {"max_frame_bytes": 1 << 30}, {"token": "a", "token_file": "/x"},
                   {"token": b"x" * 2000}, {"tls_ca_file": "/nonexistent/ca.pem"},
                   {"token_file": "/nonexistent/token"}):
            with self.subTest(kw=kw):
                with self.assertRaises(esd.InvalidArgumentError):
                    esd.Client("127.0.0.1:1", **kw)
        for bad in ("", "host:", "host:0", "host:99999", "[::1", "[::1]x", ":80"):
            with self.subTest(address=bad):
                with self.assertRaises(esd.InvalidArgumentError):
                    esd.Client(bad)
        self.assertEqual(core.parse_address("h"), ("h", 7400))
        self.assertEqual(core.parse_address("[::1]:9"), ("::1", 9))
        self.assertEqual(core.parse_address("[::1]"), ("::1", 7400))
        self.assertEqual(core.parse_address("::1"), ("::1", 7400))
        c = esd.Client("localhost:1", tls=True, tls_server_name="x")
        self.assertEqual(c._o.server_hostname, "x")

    def test_cannot_resolve(self):
        c = esd.Client("no-such-host.invalid:1", reconnect_attempts=1)
        with self.assertRaises(esd.ConnectionError):
            c.connect()


class Threads(harness.EsdTestCase):
    def test_clients_in_threads_are_independent(self):
        s = self.stream()
        errs = []

        def work():
            try:
                with esd.Client(self.server.address) as c:
                    for _ in range(50):
                        c.append(s, [esd.Event("T")])
            except Exception as e:  # pragma: no cover - reported below
                errs.append(e)
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errs, [])
        self.assertEqual(self.c.stream_info(s).event_count, 200)


if __name__ == "__main__":
    unittest.main()
