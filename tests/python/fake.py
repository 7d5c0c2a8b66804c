"""A fake esd for the client's failure paths: it accepts one connection at
a time and misbehaves in a chosen way."""

import socket
import struct
import threading

import harness  # noqa: F401  (puts the package on the path)
from esd._pb import pb


def _read_frame(conn):
    hdr = b""
    while len(hdr) < 4:
        chunk = conn.recv(4 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    body = b""
    while len(body) < n:
        chunk = conn.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return pb.Request.FromString(body)


def _send(conn, resp):
    body = resp.SerializeToString()
    conn.sendall(struct.pack(">I", len(body)) + body)


def hello_ok(rid, version=1, in_flight=64):
    """A HelloOk reply."""
    r = pb.Response(id=rid)
    r.hello.protocol_version = version
    r.hello.server_version = "fake"
    r.hello.limits.max_in_flight = in_flight
    r.hello.limits.max_frame_bytes = 1 << 20
    return r


class FakeServer:
    """Listens on 127.0.0.1, port chosen by the kernel. ``mode``:

    - "silent": reads requests, never answers
    - "hello_then_silent": answers the Hello, then nothing
    - "version2": answers the Hello with protocol version 2
    - "close_mid_frame": answers the Hello, then half a frame and a close
    - "big_frame": answers the Hello, then a header declaring 2**31 bytes
    - "garbage": answers the Hello, then a frame that is not a Response
    - "wrong_kind": answers the Hello, then a Pong to every request
    - "notice_close": answers the Hello, then an id-0 error and a close
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.conns = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self._behave(conn)
        except OSError:
            pass

    def _behave(self, conn):
        m = self.mode
        req = _read_frame(conn)
        if req is None:
            return
        if m == "silent":
            while _read_frame(conn) is not None:
                pass
            return
        _send(conn, hello_ok(req.id, 2 if m == "version2" else 1))
        if m == "version2":
            _read_frame(conn)
            return
        req = _read_frame(conn)
        if req is None:
            return
        if m == "hello_then_silent":
            while _read_frame(conn) is not None:
                pass
        elif m == "close_mid_frame":
            conn.sendall(struct.pack(">I", 100) + b"\x08")
            conn.close()
        elif m == "big_frame":
            conn.sendall(struct.pack(">I", 1 << 31))
            while _read_frame(conn) is not None:
                pass
        elif m == "garbage":
            conn.sendall(struct.pack(">I", 3) + b"\xff\xff\xff")
            while _read_frame(conn) is not None:
                pass
        elif m == "wrong_kind":
            while req is not None:
                r = pb.Response(id=req.id)
                r.pong.payload = b"?"
                _send(conn, r)
                req = _read_frame(conn)
        elif m == "notice_close":
            r = pb.Response(id=0)
            r.error.code = 29
            r.error.message = "going away"
            _send(conn, r)
            conn.close()

    def close(self):
        """Stop listening and close every connection."""
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
