"""esd.aio.Client against a real esd: the same surface as the blocking
client, including errors, pipelining and resumed subscriptions."""

import asyncio
import unittest

import harness
from fake import FakeServer

import esd
import esd.aio


class Aio(unittest.IsolatedAsyncioTestCase):
    server_args = ("--max-page", "50", "--max-events-per-append", "100")

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Esd(*cls.server_args).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    async def asyncSetUp(self):
        self.c = esd.aio.Client(self.server.address)

    async def asyncTearDown(self):
        await self.c.close()

    def stream(self, name="s"):
        return harness.EsdTestCase.stream(self, name)

    async def test_requests(self):
        self.assertFalse(self.c.connected)
        await self.c.connect()
        self.assertTrue(self.c.connected)
        self.assertEqual(self.c.server_info.limits.max_page_size, 50)
        self.assertEqual(self.c.breaker_state, esd.BREAKER_CLOSED)
        self.assertGreaterEqual(await self.c.ping(b"x"), 0)
        s = self.stream()
        r = await self.c.append(s, [esd.Event("A", {"n": 1})], expected=esd.NO_STREAM)
        self.assertEqual(r.last_revision, 0)
        with self.assertRaises(esd.WrongExpectedRevisionError) as cm:
            await self.c.append(s, [esd.Event("A")], expected=esd.NO_STREAM)
        self.assertEqual(cm.exception.conflicts[0].actual_revision, 0)
        with self.assertRaises(esd.InvalidStreamIdError):
            await self.c.append("", [esd.Event("A")])
        with self.assertRaises(esd.TooManyEventsError):
            await self.c.append(s, [esd.Event("A")] * 101)
        t = self.stream("t")
        res = await self.c.transaction([(s, 0, [esd.Event("B")]), (t, esd.ANY, [esd.Event("C")])])
        self.assertEqual([x.last_revision for x in res], [1, 0])
        with self.assertRaises(esd.WrongExpectedRevisionError) as cm:
            await self.c.transaction([(s, 0, [esd.Event("B")]), (t, 7, [esd.Event("C")])])
        self.assertEqual(len(cm.exception.conflicts), 2)
        self.assertEqual([e.type async for e in self.c.read_stream(s)], ["A", "B"])
        self.assertEqual([e.revision async for e in self.c.read_stream(s, backward=True)],
                         [1, 0])
        with self.assertRaises(esd.NotFoundError):
            async for _ in self.c.read_stream(self.stream("none")):
                pass
        info = await self.c.stream_info(s)
        self.assertEqual(info.event_count, 2)
        with self.assertRaises(esd.NotFoundError):
            await self.c.stream_info(self.stream("none"))
        names = [i.stream async for i in self.c.list_streams(prefix=s)]
        self.assertEqual(names, [s])
        self.assertEqual([i async for i in self.c.list_streams(prefix=s, limit=0)], [])
        self.assertEqual(len([i async for i in self.c.list_streams(limit=1)]), 1)
        await self.c.save_snapshot(s, 1, b"snap", 2)
        snap = await self.c.load_snapshot(s)
        self.assertEqual((snap.revision, snap.state_format, snap.data), (1, 2, b"snap"))
        with self.assertRaises(esd.NotFoundError):
            await self.c.load_snapshot(t)
        st = await self.c.stats()
        self.assertGreaterEqual(st.event_count, 3)
        pos = [e.position async for e in self.c.read_all(category=s.split("-")[0],
                                                         max_count=2)]
        self.assertEqual(len(pos), 2)
        with self.assertRaises(esd.InvalidArgumentError):
            async for _ in self.c.read_all(category="a", stream_prefix="b"):
                pass
        back = [e.position async for e in self.c.read_all(backward=True, max_count=2)]
        self.assertEqual(back[0], st.head_position)

    async def test_pipelining_paging_and_concurrency(self):
        s = self.stream()
        hs = [await self.c.append_async(s, [esd.Event("T", str(i))]) for i in range(2000)]
        rs = [await h.result() for h in hs]
        self.assertEqual([r.first_revision for r in rs], list(range(2000)))
        rs = await asyncio.gather(*[self.c.append(s, [esd.Event("T")]) for _ in range(500)])
        self.assertEqual(sorted(r.first_revision for r in rs), list(range(2000, 2500)))
        got = [e.revision async for e in self.c.read_stream(s, page_size=64)]
        self.assertEqual(got, list(range(2500)))
        got = [e.revision async for e in self.c.read_stream(s, 10, max_count=75)]
        self.assertEqual(got, list(range(10, 85)))
        c2 = esd.aio.Client(self.server.address, max_pending=1)
        await c2.append_async(s, [esd.Event("T")])
        with self.assertRaises(esd.TooManyRequestsError):
            await c2.append_async(s, [esd.Event("T")])
        await c2.close()

    async def test_subscription_resumes_after_reconnects(self):
        s = self.stream()
        await self.c.append(s, [esd.Event("T") for _ in range(30)])
        sub = await self.c.subscribe(s, batch_size=4)
        got = []
        marker = None
        async for item in sub.items(30):
            if isinstance(item, esd.CaughtUp):
                marker = item
                break
            got.append(item.revision)
        self.assertIsNotNone(marker)
        self.assertTrue(sub.caught_up)
        for round_ in range(3):
            await self.c.close()
            async with esd.aio.Client(self.server.address) as w:
                await w.append(s, [esd.Event("T") for _ in range(5)])
            async for item in sub.items(30):
                if isinstance(item, esd.RecordedEvent):
                    got.append(item.revision)
                    if len(got) == 30 + 5 * (round_ + 1):
                        break
        self.assertEqual(got, list(range(45)))
        self.assertEqual(sub.last, 44)
        self.assertEqual([i for i in await sub.poll(0) if isinstance(i, esd.RecordedEvent)], [])
        with self.assertRaises(TypeError):
            iter(sub)
        await sub.close()
        with self.assertRaises(esd.ClosedError):
            await sub.poll(0)
        allsub = await self.c.subscribe(from_end=True)
        head = allsub.last
        await self.c.append(s, [esd.Event("Live")])
        async for ev in allsub:
            self.assertEqual((ev.position, ev.type), (head + 1, "Live"))
            break
        await allsub.close()
        fresh = await self.c.subscribe(self.stream("fresh"), from_end=True)
        self.assertIsNone(fresh.last)
        ends = await self.c.subscribe(s, from_end=True)
        self.assertEqual(ends.last, 45)
        cat = await self.c.subscribe(category=s.split("-")[0], after=head)
        self.assertEqual([i.type for i in await cat.poll(10) if isinstance(
            i, esd.RecordedEvent)][:1], ["Live"])
        with self.assertRaises(esd.InvalidArgumentError):
            await self.c.subscribe(after=head + 1000)

    async def test_subscription_across_an_esd_restart(self):
        srv = harness.Esd().start()
        self.addCleanup(srv.cleanup)
        c = esd.aio.Client(srv.address, reconnect_attempts=50, backoff_initial=0.01,
                           backoff_max=0.2, breaker_threshold=0)
        await c.append("r-1", [esd.Event("T") for _ in range(5)])
        sub = await c.subscribe()
        got = []
        async for ev in sub:
            got.append(ev.position)
            if len(got) == 5:
                break
        srv.restart()
        async with esd.aio.Client(srv.address) as w:
            await w.append("r-2", [esd.Event("T") for _ in range(5)])
        async for ev in sub:
            got.append(ev.position)
            if len(got) == 10:
                break
        self.assertEqual(got, list(range(1, 11)))
        await c.close()

    async def test_quiet_subscription_pings(self):
        c = esd.aio.Client(self.server.address, request_timeout=0.2)
        s = self.stream()
        sub = await c.subscribe(s, from_end=True)
        got = await sub.poll(0.7) + await sub.poll(0.7)
        self.assertEqual([i for i in got if isinstance(i, esd.RecordedEvent)], [])
        self.assertTrue(c.connected)
        await self.c.append(s, [esd.Event("T")])
        async for ev in sub:
            self.assertEqual(ev.revision, 0)
            break
        await c.close()

    async def test_failures(self):
        closed = esd.aio.Client("127.0.0.1:1", reconnect_attempts=2, backoff_initial=0.001,
                                backoff_max=0.002, breaker_threshold=2)
        with self.assertRaises(esd.ConnectionError) as cm:
            await closed.ping()
        self.assertIn("circuit breaker now open", cm.exception.message)
        with self.assertRaises(esd.CircuitOpenError):
            await closed.ping()
        closed.clock = lambda: 1e12
        with self.assertRaises(esd.ConnectionError):
            await closed.ping()
        self.assertEqual(closed.breaker_state, esd.BREAKER_OPEN)

        f = FakeServer("hello_then_silent")
        self.addCleanup(f.close)
        c = esd.aio.Client(f.address, request_timeout=0.3)
        await c.connect()
        h = await c.append_async("s", [esd.Event("T")])
        # The append's timer runs out first: it fails with TimeoutError,
        # the connection is dropped and the ping fails with ClosedError.
        with self.assertRaises(esd.ClosedError):
            await c.ping()
        self.assertEqual(c.in_flight, 0)
        with self.assertRaises(esd.TimeoutError):
            await h.result()
        await c.close()

        for mode, exc in (("silent", esd.ConnectionError),
                          ("version2", esd.UnsupportedVersionError)):
            f = FakeServer(mode)
            self.addCleanup(f.close)
            c = esd.aio.Client(f.address, connect_timeout=0.3, reconnect_attempts=1)
            with self.assertRaises(exc):
                await c.connect()
            await c.close()
        for mode, exc in (("close_mid_frame", esd.ClosedError),
                          ("big_frame", esd.TooLargeError), ("garbage", esd.MalformedError),
                          ("wrong_kind", esd.MalformedError),
                          ("notice_close", esd.ClosedError)):
            f = FakeServer(mode)
            self.addCleanup(f.close)
            c = esd.aio.Client(f.address, reconnect_attempts=1)
            await c.connect()
            with self.assertRaises(exc):
                await c.stats()
            await c.close()
        bad = esd.aio.Client("no-such-host.invalid:1", reconnect_attempts=1)
        with self.assertRaises(esd.ConnectionError):
            await bad.connect()


if __name__ == "__main__":
    unittest.main()
