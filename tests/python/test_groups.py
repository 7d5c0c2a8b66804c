"""Consumer groups and erasure through the Python clients against a real
esd: competing members with per-stream order, acks, nacks (retry, park,
skip), parked events and their replay, a deleted group, a member that
rejoins after its connection was lost, the argument and state errors; and
stream and subject erasure."""

import asyncio
import collections
import time
import unittest

import harness

import esd
import esd.aio


def _drain(members, want, timeout=10.0):
    """Take batches from the members in turn, acking each, until `want`
    events were settled; returns {member index: [events in order]}."""
    got = collections.defaultdict(list)
    n = 0
    rounds = 0
    while n < want:
        rounds += 1
        if rounds > 10000:
            raise AssertionError(f"only {n} of {want} events came")
        for i, m in enumerate(members):
            batch = m.next_batch(timeout=0.05)
            if batch:
                got[i].extend(batch)
                m.ack(batch)
                n += len(batch)
    return got


class Groups(harness.EsdTestCase):
    def settled(self, name, timeout=10.0):
        """The group's state once nothing is in flight and its checkpoint
        stopped moving: the checkpoint follows the acks by a group commit."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            st = self.c.group_info(name)
            if st.in_flight == 0 and last is not None and st.checkpoint == last.checkpoint \
                    and (st.lag == 0 or time.monotonic() > deadline):
                return st
            if time.monotonic() > deadline:
                return st
            last = st
            time.sleep(0.02)

    def group(self, **kw):
        name = self.stream("g")
        st = self.c.create_group(name, **kw)
        self.addCleanup(self._delete, name)
        return name, st

    def _delete(self, name):
        try:
            self.c.delete_group(name)
        except esd.GroupNotFoundError:
            pass

    def member(self, name, **kw):
        c = esd.Client(self.server.address, request_timeout=30)
        self.addCleanup(c.close)
        return c.join_group(name, **kw)

    def test_members_share_the_work_in_per_stream_order(self):
        cat = self.stream("cat").replace("-", "")
        name, st = self.group(category=cat)
        self.assertEqual((st.target, st.target_name), ("category", cat))
        self.assertEqual((st.checkpoint, st.members, st.max_retries), (st.checkpoint, 0, 10))
        members = [self.member(name, consumer=f"w{i}") for i in range(2)]
        for r in range(5):
            for s in range(4):
                self.c.append(f"{cat}-{s}", [esd.Event("E", {"r": r})])
        self.c.append("other-1", [esd.Event("Noise")])  # not in the category
        got = _drain(members, 20)
        self.assertEqual(sum(len(v) for v in got.values()), 20)
        self.assertTrue(all(got[i] for i in range(2)), "both members got work")
        # Per stream, each member saw increasing revisions, and together
        # every revision exactly once.
        per_stream = collections.defaultdict(list)
        for evs in got.values():
            last = {}
            for e in evs:
                self.assertTrue(e.stream.startswith(cat + "-"))
                self.assertGreater(e.revision, last.get(e.stream, -1))
                last[e.stream] = e.revision
                per_stream[e.stream].append(e.revision)
        self.assertEqual({s: sorted(v) for s, v in per_stream.items()},
                         {f"{cat}-{s}": list(range(5)) for s in range(4)})
        info = self.settled(name)
        self.assertEqual((info.members, info.in_flight, info.lag), (2, 0, 0))
        self.assertEqual(info.checkpoint, info.head_position)
        self.assertIn(name, [g.name for g in self.c.list_groups()])

    def test_nack_retry_park_skip_and_replay(self):
        s = self.stream()
        name, _ = self.group(stream=s, max_retries=1)
        m = self.member(name)
        self.c.append(s, [esd.Event("A"), esd.Event("B"), esd.Event("C")])
        (a,) = m.next_batch(timeout=5)
        self.assertEqual(a.type, "A")
        self.assertEqual(m.nack([a], "retry"), 1)
        (again,) = m.next_batch(timeout=5)
        self.assertEqual((again.position, again.type), (a.position, "A"))
        m.nack([again.position], "park", reason="bad amount")
        (b,) = m.next_batch(timeout=5)  # parking does not block the stream
        self.assertEqual(b.type, "B")
        m.nack([b], "skip")
        (c,) = m.next_batch(timeout=5)
        m.ack([c])
        parked = list(self.c.list_parked(name))
        self.assertEqual([(p.position, p.stream, p.reason) for p in parked],
                         [(a.position, s, "bad amount")])
        self.assertEqual(self.c.group_info(name).parked, 1)
        self.assertEqual(self.c.replay_parked(name), 1)
        (back,) = m.next_batch(timeout=5)
        self.assertEqual(back.position, a.position)
        m.ack([back])
        self.assertEqual(list(self.c.list_parked(name)), [])
        info = self.settled(name)
        self.assertEqual((info.parked, info.in_flight), (0, 0))
        self.assertEqual(info.checkpoint, c.position)

    def test_errors_are_typed_and_change_nothing(self):
        s = self.stream()
        name, _ = self.group(stream=s)
        with self.assertRaises(esd.GroupExistsError):
            self.c.create_group(name, stream=s)
        with self.assertRaises(esd.GroupNotFoundError):
            self.c.join_group(self.stream("nope"))
        with self.assertRaises(esd.GroupNotFoundError):
            self.c.group_info(self.stream("nope"))
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.create_group(self.stream("g"), stream=s, ack_timeout_ms=1)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.create_group(self.stream("g"), stream=s, category="x")
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.create_group("", stream=s)
        m = self.c.join_group(name)
        with self.assertRaises(esd.AlreadyJoinedError):
            self.c.join_group(name)
        self.c.append(s, [esd.Event("A")])
        (a,) = m.next_batch(timeout=5)
        with self.assertRaises(esd.NotInFlightError):
            m.ack([a.position, a.position + 1000])  # all or nothing
        with self.assertRaises(esd.InvalidArgumentError):
            m.nack([a], "later")
        with self.assertRaises(esd.InvalidArgumentError):
            m.ack([])
        with self.assertRaises(esd.InvalidArgumentError):
            m.ack(["1"])
        self.assertEqual(self.c.group_info(name).in_flight, 1)
        m.ack([a])
        with self.assertRaises(esd.NotInFlightError):
            m.ack([a])  # acknowledged already
        u = self.c.update_group(name, ack_timeout_ms=5000, max_retries=3)
        self.assertEqual((u.ack_timeout_ms, u.max_retries), (5000, 3))
        m.leave()
        m.leave()  # idempotent
        with self.assertRaises(esd.ClosedError):
            m.next_batch(timeout=0)

    def test_deleted_group_ends_its_members(self):
        s = self.stream()
        name, _ = self.group(stream=s)
        m = self.member(name)
        self.c.delete_group(name)
        with self.assertRaises(esd.GroupNotFoundError):
            m.next_batch(timeout=5)
        with self.assertRaises(esd.GroupNotFoundError):
            m.next_batch(timeout=0)  # stays ended

    def test_member_rejoins_after_a_lost_connection(self):
        s = self.stream()
        name, _ = self.group(stream=s)
        c = esd.Client(self.server.address, request_timeout=30)
        self.addCleanup(c.close)
        m = c.join_group(name, max_in_flight=5, consumer="w")
        self.assertEqual(m.max_in_flight, 5)
        self.c.append(s, [esd.Event("A")])
        (a,) = m.next_batch(timeout=5)
        c._drop(esd.ClosedError("test: connection lost"))
        with self.assertRaises(esd.NotInFlightError):
            m.ack([a])  # taken back with the connection
        (again,) = m.next_batch(timeout=10)  # reconnects, joins, gets it again
        self.assertEqual(again.position, a.position)
        m.ack([again])
        self.assertEqual(self.settled(name).lag, 0)

    def test_slow_member_never_gets_events_taken_back(self):
        # A member busy with one batch past the ack timeout while its next
        # batch waits in the client: the server takes both back, another
        # member acks them, and the slow member's next batch never holds
        # them (the GroupRevoked push); its late ack is NotInFlightError.
        prefix = self.stream("slow") + "-"
        name, _ = self.group(stream_prefix=prefix, ack_timeout_ms=300, max_retries=1000)
        a = self.member(name, max_in_flight=10, consumer="a")
        p1 = self.c.append(prefix + "1", [esd.Event("E")]).last_position
        (first,) = a.next_batch(timeout=20)
        self.assertEqual(first.position, p1)
        p2 = self.c.append(prefix + "2", [esd.Event("E")]).last_position
        deadline = time.monotonic() + 20
        while self.c.group_info(name).in_flight != 2:  # pushed to a, not read
            self.assertLess(time.monotonic(), deadline, "the second batch never went out")
            time.sleep(0.01)
        b = self.member(name, max_in_flight=10, consumer="b")
        acked = set()
        deadline = time.monotonic() + 20
        while acked != {p1, p2}:
            self.assertLess(time.monotonic(), deadline, f"b acked only {acked}")
            for ev in b.next_batch(timeout=0.2):
                self.assertIn(ev.position, (p1, p2))
                try:
                    b.ack([ev])
                    acked.add(ev.position)
                except esd.NotInFlightError:
                    pass  # b itself was slower than the timeout: it comes again
        b.leave()
        with self.assertRaises(esd.NotInFlightError):
            a.ack([first])
        p3 = self.c.append(prefix + "2", [esd.Event("E")]).last_position
        batch = []
        deadline = time.monotonic() + 20
        while not batch:
            self.assertLess(time.monotonic(), deadline, "the new event never came")
            batch = a.next_batch(timeout=0.2)
        self.assertEqual([(e.position, e.revision) for e in batch], [(p3, 1)])
        a.ack(batch)
        self.assertGreaterEqual(a.revokes, 1)
        self.assertGreaterEqual(a.revoked_dropped, 1)

    def test_revoke_for_a_left_member_is_ignored(self):
        s = self.stream()
        name, _ = self.group(stream=s)
        c = esd.Client(self.server.address, request_timeout=30)
        self.addCleanup(c.close)
        m = c.join_group(name, consumer="w")
        p = self.c.append(s, [esd.Event("A")]).last_position
        (a,) = m.next_batch(timeout=5)
        m.leave()  # with `a` in flight: a GroupRevoked for it follows
        deadline = time.monotonic() + 20
        while c.group_info(name).in_flight != 0:  # reads that push on c
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        c.ping()
        m2 = c.join_group(name, consumer="w2")
        (again,) = m2.next_batch(timeout=10)
        self.assertEqual(again.position, p)
        m2.ack([again])

    def test_revoke_drops_only_batches_queued_before_it(self):
        # The member's push handling, with hand-made pushes: a revoke drops
        # one event out of a batch and a whole batch, not a later push.
        s = self.stream()
        name, _ = self.group(stream=s)
        c = esd.Client(self.server.address, request_timeout=30)
        self.addCleanup(c.close)
        m = c.join_group(name, consumer="w")
        pb = esd._core.pb

        def push(kind, **fields):
            r = pb.Response(id=m._id)
            getattr(r, kind).SetInParent()
            for k, v in fields.items():
                getattr(getattr(r, kind), k).extend(v)
            m._on_push(kind, r, 0)

        ev = lambda pos: pb.RecordedEvent(stream=b"x", position=pos)  # noqa: E731
        push("group_events", events=[ev(7), ev(8)])
        push("group_events", events=[ev(9)])
        push("group_revoked", positions=[9, 7])
        push("group_events", events=[ev(9)])  # delivered anew after the revoke
        self.assertEqual([[e.position for e in item] for item in m._queue], [[8], [], [9]])
        self.assertEqual((m.revokes, m.revoked_dropped), (1, 2))

    def test_asyncio_client_manages_groups(self):
        s = self.stream()
        name = self.stream("ag")

        async def run():
            async with esd.aio.Client(self.server.address) as ac:
                st = await ac.create_group(name, stream=s, from_end=True, park_blocks=True)
                self.assertTrue(st.park_blocks)
                self.assertEqual((await ac.group_info(name)).name, name)
                self.assertIn(name, [g.name for g in await ac.list_groups()])
                self.assertEqual([p async for p in ac.list_parked(name)], [])
                self.assertEqual(await ac.replay_parked(name), 0)
                u = await ac.update_group(name, max_retries=0)
                self.assertEqual(u.max_retries, 0)
                await ac.delete_group(name)
                with self.assertRaises(esd.GroupNotFoundError):
                    await ac.group_info(name)
        asyncio.run(run())


class Erasure(harness.EsdTestCase):
    def test_erase_stream_needs_a_confirmation_and_then_reads_are_erased(self):
        s = self.stream()
        self.c.append(s, [esd.Event("PersonRegistered", {"name": "Ann"})])
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.erase_stream(s)  # no confirmation
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.erase_stream(s, expected=5)
        self.assertEqual([e.type for e in self.c.read_stream(s)], ["PersonRegistered"])
        e = self.c.erase_stream(s, expected=0)
        self.assertFalse(e.already)
        self.assertEqual(e.streams, 1)
        self.assertGreater(e.erased_at_us, 0)
        with self.assertRaises(esd.ErasedError):
            list(self.c.read_stream(s))
        with self.assertRaises(esd.ErasedError):
            self.c.append(s, [esd.Event("X")])
        again = self.c.erase_stream(s, force=True)
        self.assertTrue(again.already)
        self.assertEqual(again.erased_at_us, e.erased_at_us)

    def test_erase_subject_erases_all_its_streams_at_once(self):
        subject = self.stream("person")
        a, b, other = self.stream("a"), self.stream("b"), self.stream("o")
        self.c.append(a, [esd.Event("E")], subject=subject)
        self.c.append(b, [esd.Event("E")], subject=subject)
        self.c.append(other, [esd.Event("E")])
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.erase_subject(subject)  # no confirmation
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.erase_stream(a, force=True)  # a subject's stream goes with its subject
        self.assertEqual(self.c.erase_subject(subject, force=True).streams, 2)
        for s in (a, b):
            with self.assertRaises(esd.ErasedError):
                list(self.c.read_stream(s))
        self.assertEqual(len(list(self.c.read_stream(other))), 1)

    def test_asyncio_erase(self):
        s = self.stream()
        self.c.append(s, [esd.Event("E")])

        async def run():
            async with esd.aio.Client(self.server.address) as ac:
                self.assertEqual((await ac.erase_stream(s, force=True)).streams, 1)
                with self.assertRaises(esd.ErasedError):
                    await ac.append(s, [esd.Event("X")])
                with self.assertRaises(esd.NotFoundError):
                    await ac.erase_subject(self.stream("nobody"), force=True)
        asyncio.run(run())


if __name__ == "__main__":
    unittest.main()
