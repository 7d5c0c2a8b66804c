"""Stream lifecycle through the Python clients against a real esd: soft
delete and recreation, tombstones, retention metadata with its own
revision, and the argument errors, for esd.Client and esd.aio.Client."""

import datetime
import hashlib
import os
import shutil
import tempfile
import unittest

import harness

import esd
import esd.aio


def _events(n):
    return [esd.Event("E", {"n": i}) for i in range(n)]


class Lifecycle(harness.EsdTestCase):
    def test_delete_then_read_is_not_found_and_an_append_recreates(self):
        s = self.stream()
        self.c.append(s, _events(3), expected=esd.NO_STREAM)
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.delete_stream(s, expected=1)
        d = self.c.delete_stream(s, expected=2)
        self.assertEqual(d, esd.StreamDeleted(last_revision=2, synced=d.synced))
        with self.assertRaises(esd.NotFoundError):
            list(self.c.read_stream(s))
        with self.assertRaises(esd.NotFoundError):
            self.c.stream_info(s)
        self.assertNotIn(s, [i.stream for i in self.c.list_streams(prefix=s)])
        m = self.c.get_stream_metadata(s)
        self.assertTrue(m.deleted)
        self.assertEqual(m.deleted_before, 3)
        # Deleting again changes nothing; a deleted stream is NO_STREAM.
        self.assertEqual(self.c.delete_stream(s, expected=esd.NO_STREAM).last_revision, 2)
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.append(s, [esd.Event("X")], expected=esd.STREAM_EXISTS)
        # The recreating append continues the revisions.
        r = self.c.append(s, _events(2), expected=esd.NO_STREAM)
        self.assertEqual((r.first_revision, r.last_revision), (3, 4))
        self.assertEqual([e.revision for e in self.c.read_stream(s)], [3, 4])
        self.assertEqual(self.c.stream_info(s).event_count, 2)
        self.assertFalse(self.c.get_stream_metadata(s).deleted)

    def test_tombstone_refuses_appends_and_reads_for_ever(self):
        s = self.stream()
        self.c.append(s, _events(2))
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.tombstone_stream(s, esd.NO_STREAM)
        self.assertEqual(self.c.tombstone_stream(s, 1).last_revision, 1)
        with self.assertRaises(esd.StreamDeletedError):
            self.c.append(s, [esd.Event("X")])
        with self.assertRaises(esd.StreamDeletedError):
            list(self.c.read_stream(s))
        with self.assertRaises(esd.StreamDeletedError):
            self.c.get_stream_metadata(s)
        with self.assertRaises(esd.StreamDeletedError):
            self.c.delete_stream(s)
        with self.assertRaises(esd.StreamDeletedError):
            self.c.set_stream_metadata(s, esd.ANY, max_count=1)
        self.assertEqual(self.c.tombstone_stream(s, esd.ANY).last_revision, 1)
        self.assertTrue(self.c.connected)

    def test_metadata_revision_and_retention(self):
        s = self.stream()
        self.c.append(s, _events(5))
        m = self.c.get_stream_metadata(s)
        self.assertEqual((m.stream, m.exists, m.max_count, m.deleted), (s, False, 0, False))
        m = self.c.set_stream_metadata(s, esd.NO_STREAM, max_count=2)
        self.assertEqual(m, esd.StreamMetadata(stream=s, exists=True, metadata_revision=0,
                                               truncate_before=0, max_count=2, max_age=0,
                                               deleted=False, deleted_before=0))
        with self.assertRaises(Exception):
            m.max_count = 3  # frozen
        self.assertEqual([e.revision for e in self.c.read_stream(s)], [3, 4])
        # The window moves with each append.
        self.c.append(s, _events(1))
        self.assertEqual([e.revision for e in self.c.read_stream(s)], [4, 5])
        self.assertEqual(self.c.stream_info(s).event_count, 2)
        # A stale metadata revision is refused and changes nothing.
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.set_stream_metadata(s, esd.NO_STREAM, max_count=1)
        with self.assertRaises(esd.WrongExpectedRevisionError):
            self.c.set_stream_metadata(s, 5, max_count=1)
        self.assertEqual(self.c.get_stream_metadata(s), m)
        # Each set replaces every limit: lowering them serves the events again.
        m = self.c.set_stream_metadata(s, 0, truncate_before=1,
                                       max_age=datetime.timedelta(days=1))
        self.assertEqual((m.metadata_revision, m.truncate_before, m.max_count, m.max_age),
                         (1, 1, 0, 86400))
        self.assertEqual([e.revision for e in self.c.read_stream(s)], [1, 2, 3, 4, 5])
        m = self.c.set_stream_metadata(s, esd.ANY, max_age=3600)
        self.assertEqual((m.metadata_revision, m.max_age, m.truncate_before), (2, 3600, 0))
        self.assertEqual(len(list(self.c.read_stream(s))), 6)
        # truncate_before = last revision + 1 hides every event; beyond it is refused.
        self.c.set_stream_metadata(s, 2, truncate_before=6)
        self.assertEqual(list(self.c.read_stream(s)), [])
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.set_stream_metadata(s, 3, truncate_before=7)

    def test_argument_errors(self):
        s = self.stream()
        self.c.append(s, _events(1))
        changes = (lambda st: self.c.delete_stream(st),
                   lambda st: self.c.tombstone_stream(st, esd.ANY),
                   lambda st: self.c.set_stream_metadata(st, esd.ANY, max_count=1))
        for call in changes + (lambda st: self.c.get_stream_metadata(st),):
            with self.assertRaises(esd.ReservedStreamError):
                call("$stats")
            with self.assertRaises(esd.InvalidStreamIdError):
                call("")
        for call in changes + (lambda st: self.c.get_stream_metadata(st),):
            with self.assertRaises(esd.NotFoundError):
                call(self.stream("never"))
            with self.assertRaises(TypeError):
                call(b"bytes")
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.set_stream_metadata(s, esd.ANY, max_age=101 * 366 * 24 * 3600)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.set_stream_metadata(s, esd.ANY, max_count=-1)
        with self.assertRaises(esd.InvalidArgumentError):
            self.c.set_stream_metadata(s, esd.ANY, max_age=datetime.timedelta(seconds=-1))
        with self.assertRaises(TypeError):
            self.c.set_stream_metadata(s, esd.ANY, max_count=1.5)
        with self.assertRaises(TypeError):
            self.c.set_stream_metadata(s, esd.ANY, truncate_before=True)
        with self.assertRaises(TypeError):
            self.c.delete_stream(s, expected="1")
        # Nothing of that was stored.
        self.assertFalse(self.c.get_stream_metadata(s).exists)
        self.assertEqual(len(list(self.c.read_stream(s))), 1)


class AioLifecycle(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = harness.Esd().start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    async def asyncSetUp(self):
        self.c = esd.aio.Client(self.server.address)

    async def asyncTearDown(self):
        await self.c.close()

    def stream(self, name="s"):
        return harness.EsdTestCase.stream(self, name)

    async def test_same_surface(self):
        s = self.stream()
        await self.c.append(s, _events(3))
        m = await self.c.set_stream_metadata(s, esd.NO_STREAM, max_count=1)
        self.assertEqual((m.metadata_revision, m.max_count), (0, 1))
        self.assertEqual([e.revision async for e in self.c.read_stream(s)], [2])
        with self.assertRaises(esd.WrongExpectedRevisionError):
            await self.c.set_stream_metadata(s, esd.NO_STREAM)
        self.assertEqual(await self.c.get_stream_metadata(s), m)
        self.assertEqual((await self.c.delete_stream(s, esd.STREAM_EXISTS)).last_revision, 2)
        with self.assertRaises(esd.NotFoundError):
            [e async for e in self.c.read_stream(s)]
        r = await self.c.append(s, _events(1), expected=2)
        self.assertEqual(r.last_revision, 3)
        self.assertEqual((await self.c.tombstone_stream(s, 3)).last_revision, 3)
        with self.assertRaises(esd.StreamDeletedError):
            await self.c.append(s, _events(1))
        with self.assertRaises(esd.StreamDeletedError):
            [e async for e in self.c.read_stream(s)]
        with self.assertRaises(esd.ReservedStreamError):
            await self.c.delete_stream("$x")
        with self.assertRaises(esd.InvalidArgumentError):
            await self.c.set_stream_metadata(self.stream(), esd.ANY, max_count=-1)


class Roles(unittest.TestCase):
    WRITER = "writer-token-3"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="esd-py-life-")
        path = os.path.join(cls.dir, "auth")
        with open(path, "w") as f:
            f.write(f"writer write sha256:{hashlib.sha256(cls.WRITER.encode()).hexdigest()}\n")
        os.chmod(path, 0o600)
        cls.server = harness.Esd("--auth-file", path).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_tombstone_needs_the_admin_role(self):
        with esd.Client(self.server.address, user="writer", token=self.WRITER) as w:
            w.append("life-s", _events(2))
            with self.assertRaises(esd.PermissionDeniedError):
                w.tombstone_stream("life-s", esd.ANY)
            self.assertEqual([e.revision for e in w.read_stream("life-s")], [0, 1])
            self.assertEqual(w.delete_stream("life-s").last_revision, 1)


if __name__ == "__main__":
    unittest.main()
