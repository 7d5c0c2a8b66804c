"""The generated message classes never drift from the schema, and the
error classes never drift from the protocol's error codes."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import uuid

import harness

import esd
from esd import _pb, errors
from esd.types import Expected, uuid7

PROTO = os.environ.get("ESD_PROTO") or os.path.join(harness.SRC, "proto", "es", "v1",
                                                    "es.proto")
ERR_H = os.path.join(harness.SRC, "proto", "include", "es", "err.h")
PROTOC = os.environ.get("PROTOC") or shutil.which("protoc")


class Schema(unittest.TestCase):

    @unittest.skipUnless(PROTOC, "no protoc")
    def test_loaded_module_matches_the_schema(self):
        from google.protobuf import descriptor_pb2
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "es.desc")
            subprocess.run([PROTOC, f"--descriptor_set_out={out}",
                            f"-I{os.path.dirname(PROTO)}", PROTO], check=True)
            with open(out, "rb") as f:
                fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        (want,) = fds.file
        got = descriptor_pb2.FileDescriptorProto()
        _pb.pb.DESCRIPTOR.CopyToProto(got)
        # CopyToProto leaves out the derived JSON names; so does the check.
        for fdp in (want, got):
            stack = list(fdp.message_type)
            while stack:
                m = stack.pop()
                for f in m.field:
                    f.ClearField("json_name")
                stack.extend(m.nested_type)
        self.assertEqual(got.package, "es.v1")
        self.assertEqual(got, want, f"{_pb.origin} differs from {PROTO}: regenerate it")

    @unittest.skipUnless(PROTOC, "no protoc")
    def test_pip_install_generates_the_module(self):
        # pip install of a copy of the package (offline: no index, the
        # build backend from the system), then the installed module is
        # checked against the schema in a fresh interpreter.
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src")
            shutil.copytree(harness.PKG, src, ignore=shutil.ignore_patterns(
                "build", "*.egg-info", "__pycache__", "es_pb2.py"))
            target = os.path.join(d, "site")
            env = dict(os.environ, ESD_PROTO=PROTO, PROTOC=PROTOC)
            env.pop("ESD_PB_DIR", None)
            p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index",
                                "--no-build-isolation", "--no-deps", "--target", target, src],
                               capture_output=True, text=True, env=env, cwd=d)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertTrue(os.path.isfile(os.path.join(target, "esd", "es_pb2.py")))
            self.assertFalse(os.path.exists(os.path.join(harness.PKG, "esd", "es_pb2.py")))
            env["PYTHONPATH"] = target
            p = subprocess.run([sys.executable, "-c", "import esd._pb as p, esd.aio; "
                                "print(p.origin); print(p.pb.DESCRIPTOR.serialized_pb.hex())"],
                               capture_output=True, text=True, env=env, cwd=d)
            self.assertEqual(p.returncode, 0, p.stderr)
            origin, blob = p.stdout.split()
            self.assertTrue(origin.startswith(target))
            self.assertEqual(bytes.fromhex(blob), _pb.pb.DESCRIPTOR.serialized_pb)

    def test_error_classes_follow_the_wire_and_err_h(self):
        enum = {v.number: v.name.removeprefix("ERROR_CODE_")
                for v in _pb.pb.DESCRIPTOR.enum_types_by_name["ErrorCode"].values}
        table = {num: name for num, name, _, _ in errors.ERROR_TABLE}
        self.assertEqual(table, {k: v for k, v in enum.items() if k != 0})
        with open(ERR_H) as f:
            text = f.read()
        h = {int(num): (name, msg) for name, num, msg in
             re.findall(r'X\((\w+), (\d+),[\s\\]*"((?:[^"\\]|\\.)*)"\)', text)}
        self.assertEqual({k: v[0] for k, v in h.items() if k}, table)
        for num, name, cls_name, msg in errors.ERROR_TABLE:
            cls = getattr(esd, cls_name)
            self.assertIs(errors.error_for(num), cls)
            self.assertEqual((cls.code, cls.name, cls.default_message), (num, name, msg))
            self.assertEqual(h[num][1], msg)
            self.assertTrue(issubclass(cls, esd.EsdError))
            e = cls()
            self.assertEqual(str(e), f"{msg} ({name})")
            self.assertTrue(cls.__doc__)
        self.assertTrue(issubclass(esd.TimeoutError, TimeoutError))
        self.assertTrue(issubclass(esd.ConnectionError, ConnectionError))
        self.assertIs(errors.error_for(999), esd.EsdError)
        unknown = errors.make_error(999, "odd")
        self.assertEqual((unknown.code, unknown.message), (999, "odd"))
        self.assertIsInstance(errors.make_error(0), esd.InternalError)


class Types(unittest.TestCase):

    def test_expected(self):
        self.assertEqual(Expected.of(None), esd.ANY)
        self.assertEqual(Expected.of(4), Expected.exact(4))
        self.assertIs(Expected.of(esd.NO_STREAM), esd.NO_STREAM)
        self.assertEqual(repr(esd.STREAM_EXISTS), "esd.STREAM_EXISTS")
        self.assertEqual(repr(Expected.exact(3)), "Expected.exact(3)")
        self.assertEqual(len({Expected.exact(1), Expected.exact(1), esd.ANY}), 2)
        self.assertNotEqual(esd.ANY, 0)
        for bad in (True, "1", 1.0):
            with self.assertRaises(TypeError):
                Expected.of(bad)
        with self.assertRaises(ValueError):
            Expected(9)
        with self.assertRaises(ValueError):
            Expected.exact(-1)

    def test_events(self):
        e = esd.Event("T", {"a": "é"})
        self.assertEqual((e.data, e.content_type), ('{"a":"é"}'.encode(), "application/json"))
        self.assertEqual(esd.Event("T", [1], content_type="x/y").content_type, "x/y")
        self.assertEqual(esd.Event("T", bytearray(b"ab"), metadata="m").metadata, b"m")
        self.assertIn("Event('T'", repr(e))
        u = uuid.uuid4()
        self.assertEqual(esd.Event("T", id=u.bytes).id, u)
        for kw in ({"id": 5}, {"id": b"short"}, {"metadata": 3}, {"correlation_id": 1.0}):
            with self.assertRaises(TypeError):
                esd.Event("T", **kw)
        with self.assertRaises(TypeError):
            esd.Event(5)

    def test_uuid7(self):
        ids = [uuid7() for _ in range(5000)]
        self.assertEqual(len(set(ids)), 5000)
        for u in ids[:50]:
            self.assertEqual(u.version, 7)
            self.assertEqual(u.variant, uuid.RFC_4122)
        self.assertLessEqual(ids[0].int >> 80, ids[-1].int >> 80)


if __name__ == "__main__":
    unittest.main()
