"""TLS and authentication through the Python client (certificates made by
the openssl command, as the C TLS tests do)."""

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

import esd
import esd.aio

OPENSSL = os.environ.get("OPENSSL_BIN") or shutil.which("openssl")


def openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


@unittest.skipUnless(OPENSSL, "no openssl command to make certificates")
class Tls(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        d = cls.dir = tempfile.mkdtemp(prefix="esd-py-tls-")
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                    "-subj", f"/CN=esd test {ca}", cwd=d)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost", cwd=d)
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext.cnf",
                cwd=d)
        cls.ca = os.path.join(d, "ca.crt")
        cls.other = os.path.join(d, "other-ca.crt")
        cls.server = harness.Esd("--tls-cert", os.path.join(d, "srv.crt"), "--tls-key",
                                 os.path.join(d, "srv.key")).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_verified_connection(self):
        for kw in ({"tls_ca_file": self.ca},
                   {"tls_ca_file": self.ca, "tls_server_name": "localhost"},
                   {"tls": True, "tls_insecure": True}):
            with self.subTest(kw=kw):
                with esd.Client(self.server.address, **kw) as c:
                    s = f"tls-{len(kw)}-{id(kw)}"
                    c.append(s, [esd.Event("T", b"secret")])
                    self.assertEqual([e.data for e in c.read_stream(s)], [b"secret"])
                    big = b"x" * 300000  # several TLS records per frame
                    c.append(s, [esd.Event("Big", big)])
                    self.assertEqual(list(c.read_stream(s))[-1].data, big)

    def test_refused_certificates(self):
        for kw, why in (({"tls_ca_file": self.other}, "not trusted"),
                        ({"tls_ca_file": self.ca, "tls_server_name": "wrong.example"},
                         "not trusted")):
            with self.subTest(kw=kw):
                c = esd.Client(self.server.address, reconnect_attempts=1, **kw)
                with self.assertRaises(esd.ConnectionError) as cm:
                    c.connect()
                self.assertIn(why, cm.exception.message)

    def test_plain_client_against_tls_server(self):
        c = esd.Client(self.server.address, reconnect_attempts=1, connect_timeout=2)
        with self.assertRaises(esd.ConnectionError):
            c.connect()

    def test_aio_tls(self):
        async def go():
            async with esd.aio.Client(self.server.address, tls_ca_file=self.ca) as c:
                await c.append("tls-aio", [esd.Event("T")])
                return [e.type async for e in c.read_stream("tls-aio")]
        self.assertEqual(asyncio.run(go()), ["T"])

        async def bad():
            c = esd.aio.Client(self.server.address, tls_ca_file=self.other,
                               reconnect_attempts=1)
            await c.connect()
        with self.assertRaises(esd.ConnectionError):
            asyncio.run(bad())

    def test_account_py_over_tls(self):
        p = subprocess.run([sys.executable, harness.ACCOUNT_PY, "-s", self.server.address,
                            "--tls-ca", self.ca, "--json", "open", "tlsacct", "--owner", "T"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([sys.executable, harness.ACCOUNT_PY, "-s", self.server.address,
                            "--tls-insecure", "--json", "balance", "tlsacct"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(json.loads(p.stdout)["owner"], "T")
        self.assertIn("--tls-insecure", p.stderr)


class Auth(unittest.TestCase):
    READER, WRITER = "reader-token-1", "writer-token-2"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="esd-py-auth-")
        path = os.path.join(cls.dir, "auth")
        with open(path, "w") as f:
            f.write(f"reader read {cls.READER}\n"
                    f"writer write sha256:{hashlib.sha256(cls.WRITER.encode()).hexdigest()}\n")
        os.chmod(path, 0o600)
        cls.token_file = os.path.join(cls.dir, "token")
        with open(cls.token_file, "w") as f:
            f.write(cls.READER + "\n")
        os.chmod(cls.token_file, 0o600)
        cls.server = harness.Esd("--auth-file", path, "--auth-failures", "1000").start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_credentials(self):
        with esd.Client(self.server.address, user="writer", token=self.WRITER) as w:
            w.append("auth-s", [esd.Event("T")])
            self.assertEqual(w.server_info.role, "write")
        with esd.Client(self.server.address, user="reader", token_file=self.token_file) as r:
            self.assertEqual([e.type for e in r.read_stream("auth-s")], ["T"])
            with self.assertRaises(esd.PermissionDeniedError):
                r.append("auth-s", [esd.Event("T")])
            r.ping()  # still connected after a refusal
        for kw in ({}, {"user": "reader", "token": "wrong"}, {"user": "nobody",
                                                              "token": self.READER}):
            with self.subTest(kw=kw):
                c = esd.Client(self.server.address, breaker_threshold=1, **kw)
                with self.assertRaises(esd.UnauthenticatedError):
                    c.ping()
                # Refusals are not connection failures: the breaker stays closed.
                self.assertEqual(c.breaker_state, esd.BREAKER_CLOSED)

    def test_aio_credentials(self):
        async def go():
            async with esd.aio.Client(self.server.address, user="writer",
                                      token=self.WRITER.encode()) as c:
                await c.append("auth-aio", [esd.Event("T")])
            bad = esd.aio.Client(self.server.address, user="writer", token="nope")
            try:
                await bad.ping()
            finally:
                await bad.close()
        with self.assertRaises(esd.UnauthenticatedError):
            asyncio.run(go())

    def test_account_py_credentials(self):
        env = dict(os.environ, ES_USER="writer", ES_TOKEN=self.WRITER)
        p = subprocess.run([sys.executable, harness.ACCOUNT_PY, "-s", self.server.address,
                            "--json", "open", "authacct", "--owner", "A"], capture_output=True,
                           text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([sys.executable, harness.ACCOUNT_PY, "-s", self.server.address,
                            "--user", "reader", "--token-file", self.token_file, "--json",
                            "deposit", "authacct", "5"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((p.returncode, json.loads(p.stderr)["error"]),
                         (1, "PERMISSION_DENIED"))
        p = subprocess.run([sys.executable, harness.ACCOUNT_PY, "-s", self.server.address,
                            "--json", "balance", "authacct"], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, ES_USER="", ES_TOKEN=""))
        self.assertEqual((p.returncode, json.loads(p.stderr)["error"]), (3, "UNAUTHENTICATED"))

    def test_token_file_rules(self):
        empty = os.path.join(self.dir, "empty")
        with open(empty, "w") as f:
            f.write("  \n")
        long_ = os.path.join(self.dir, "long")
        with open(long_, "w") as f:
            f.write("x" * 2000)
        for path, why in ((empty, "empty"), (long_, "longer"), ("/nonexistent", "cannot read")):
            with self.subTest(path=path):
                with self.assertRaises(esd.InvalidArgumentError) as cm:
                    esd.Client("127.0.0.1:1", token_file=path)
                self.assertIn(why, cm.exception.message)


if __name__ == "__main__":
    unittest.main()
