#!/usr/bin/env python3
"""bench.py — throughput of the Python client of esd.

    bench.py [--esd PATH | --address HOST:PORT] [--events N] [--appends N] [--runs N]

Two figures, each the median of --runs runs (default 3):

- replay: one stream of --events events (default 100,000, 100-byte
  payloads) read from the start by Client.read_stream, touching each
  event's revision, type and data — events/s;
- appends: --appends (default 10,000) single-event appends to one stream,
  pipelined with append_async from one process, every result collected —
  events/s.

Without --address it starts the esd given by --esd (default
build/server/esd) on port 0 with --sync none in a temporary directory.
The machine's load shows in the wall-clock figures (compare medians, not
single runs); the rate per second of the client's CPU time is printed too,
which other processes on the machine disturb far less.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if "ESD_PB_DIR" not in os.environ:
    os.environ["ESD_PB_DIR"] = os.path.join(HERE, "..", "..", "build", "client", "python")
import esd  # noqa: E402


def start_esd(path):
    d = tempfile.mkdtemp(prefix="esd-bench-")
    port_file = os.path.join(d, "port")
    proc = subprocess.Popen([path, "--listen", "127.0.0.1:0", "--data-dir",
                             os.path.join(d, "data"), "--port-file", port_file, "--sync",
                             "none", "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    limit = time.monotonic() + 60
    while time.monotonic() < limit:
        if os.path.exists(port_file) and open(port_file).read().strip():
            return proc, d, f"127.0.0.1:{open(port_file).read().strip()}"
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    raise SystemExit("bench.py: esd did not start")


def fill(c, stream, n):
    payload = b"x" * 100
    handles = []
    for i in range(0, n, 1000):
        k = min(1000, n - i)
        handles.append(c.append_async(stream, [esd.Event("Bench", payload) for _ in range(k)]))
    for h in handles:
        h.result()


def replay(c, stream):
    c0 = time.process_time()
    t0 = time.perf_counter()
    n = 0
    nbytes = 0
    for ev in c.read_stream(stream):
        n += ev.revision >= 0
        nbytes += len(ev.type) + len(ev.data)
    dt = time.perf_counter() - t0
    return n, dt, time.process_time() - c0


def appends(c, stream, n):
    c0 = time.process_time()
    t0 = time.perf_counter()
    hs = [c.append_async(stream, [esd.Event("Bench", b"y" * 100)]) for _ in range(n)]
    for h in hs:
        h.result()
    return n, time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--esd", default=os.path.join(HERE, "..", "..", "build", "server", "esd"))
    ap.add_argument("--address")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    proc = tmp = None
    address = a.address
    if address is None:
        proc, tmp, address = start_esd(a.esd)
    try:
        with esd.Client(address) as c:
            info = c.server_info or (c.connect() or c.server_info)
            sync = "none" if info.sync_mode == 1 else "full"
            stream = f"bench-replay-{time.time_ns()}"
            fill(c, stream, a.events)
            rates, crates = [], []
            for r in range(a.runs):
                n, dt, cpu = replay(c, stream)
                assert n == a.events, (n, a.events)
                rates.append(n / dt)
                crates.append(n / cpu)
                print(f"replay run {r + 1}: {n} events in {dt:.3f} s = {n / dt:,.0f} events/s "
                      f"(client CPU {cpu:.3f} s)")
            print(f"replay median: {statistics.median(rates):,.0f} events/s; per second of "
                  f"client CPU: {statistics.median(crates):,.0f} ({a.events} events, page "
                  f"{info.limits.max_page_size}, sync {sync})")
            rates, crates = [], []
            for r in range(a.runs):
                n, dt, cpu = appends(c, f"bench-append-{time.time_ns()}", a.appends)
                rates.append(n / dt)
                crates.append(n / cpu)
                print(f"appends run {r + 1}: {n} in {dt:.3f} s = {n / dt:,.0f} events/s "
                      f"(client CPU {cpu:.3f} s)")
            print(f"pipelined single-event appends median: {statistics.median(rates):,.0f} "
                  f"events/s; per second of client CPU: {statistics.median(crates):,.0f} "
                  f"({a.appends} appends, sync {sync})")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
