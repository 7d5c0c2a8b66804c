"""Test support: a real esd started on port 0 in a temporary directory.

The binaries and the generated module come from the meson build through
the environment: ESD_BIN (server/esd), ES_ACCOUNT_BIN (es-account),
ESD_PB_DIR (es_pb2.py), ESD_PROTO (the schema), PROTOC. The package is
imported from client/python in the source tree (or as installed).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
PKG = os.path.join(SRC, "client", "python")
if PKG not in sys.path:
    sys.path.insert(0, PKG)

import esd  # noqa: E402

ESD_BIN = os.environ.get("ESD_BIN", os.path.join(SRC, "build", "server", "esd"))
ES_ACCOUNT_BIN = os.environ.get("ES_ACCOUNT_BIN",
                                os.path.join(SRC, "build", "client", "examples", "account",
                                             "es-account"))
ACCOUNT_PY = os.path.join(PKG, "examples", "account.py")
#: How long a started server may take to write its port file.
START_LIMIT = float(os.environ.get("ESD_TEST_START_LIMIT", "60"))


class Esd:
    """One esd process on 127.0.0.1, port 0 (or a given port), with its own
    data directory (kept across restart())."""

    def __init__(self, *args: str, workdir: str = None):
        self.args = list(args)
        self.dir = workdir or tempfile.mkdtemp(prefix="esd-py-")
        self.data = os.path.join(self.dir, "data")
        self.port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "esd.log")
        self.proc = None
        self.port = 0

    @property
    def address(self) -> str:
        """'127.0.0.1:PORT'."""
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> "Esd":
        """Start it and wait until it listens (its port file appears)."""
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [ESD_BIN, "--listen", f"127.0.0.1:{port}", "--data-dir", self.data, "--port-file",
             self.port_file, "--sync", "none", *self.args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        limit = time.monotonic() + START_LIMIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"esd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with open(self.port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return self
            except FileNotFoundError:
                pass
            if time.monotonic() > limit:
                self.kill()
                raise RuntimeError(f"esd did not start:\n{self.log()}")
            time.sleep(0.01)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        """Stop it and start it again on the same port and data (the port
        the kernel chose at the first start: clients reconnect to the same
        address, as they would to a restarted production server)."""
        port = self.port
        self.stop()
        self.start(port)

    def log(self) -> str:
        """The server's log."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Kill it and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class EsdTestCase(unittest.TestCase):
    """A test case with one esd for the whole class (self.server) and a
    fresh client per test (self.c)."""

    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Esd(*cls.server_args).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def setUp(self):
        self.c = esd.Client(self.server.address, request_timeout=30)
        self.addCleanup(self.c.close)

    def stream(self, name: str = "s") -> str:
        """A stream id unique to this test."""
        return f"{name}-{self.id().rsplit('.', 1)[-1]}-{time.monotonic_ns()}"
