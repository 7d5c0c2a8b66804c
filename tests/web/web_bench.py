#!/usr/bin/env python3
"""web_bench — a benchmark program (not a test): the TCP port's append
latency while the web console is loaded without pacing.

For each esd binary given (--esd, repeatable: e.g. the one before a change
and the one after), and for each of --rounds rounds, binaries taking turns
so that a shared machine's noise falls on all of them alike:
  1. start esd (auth file, --sync none) and seed it with web_seed;
  2. esbench append (4 connections) for --seconds: the quiet figures;
  3. 100 logged-in sessions send back to back (overview, streams by prefix,
     a stream page, a log page, and with --mix console+id, the default, an
     event looked up by id), and esbench append runs again for --seconds:
     the loaded figures.
Prints one line per run and, at the end, the medians per binary.

  ESCTL_BIN=... ESBENCH_BIN=... WEB_SEED_BIN=... \\
    python3 tests/web/web_bench.py --esd OLD/esd --esd NEW/esd --rounds 3

With --profile-cmd 'perf record -g -p {pid} -o FILE -- sleep 10' the command
runs (pid filled in) while the loaded phase runs, on the first round only.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webh import ADMIN, READER, Client, Esd  # noqa: E402

SESSIONS = 100


def bench(esd, seconds):
    out = subprocess.run([os.environ['ESBENCH_BIN'], '-s', esd.address, 'append', '--connections', '4',
                          '--duration', str(seconds), '--json'],
                         capture_output=True, env=esd.env(ADMIN), check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def run_once(binary, seconds, profile_cmd, mix):
    os.environ['ESD_BIN'] = binary
    esd = Esd(auth=True)
    try:
        needle, first_id = esd.seed(2000)
        quiet = bench(esd, seconds)
        clients = []
        for i in range(SESSIONS):
            c = Client(esd)
            c.login(ADMIN if i % 2 == 0 else READER)
            clients.append(c)
        paths = ['/api/overview', '/api/streams?prefix=load-0&limit=50', '/api/stream?id=' + needle,
                 '/api/log?limit=20', '/api/streams?prefix=needle']
        if mix == 'console+id':
            paths.append('/api/event?id=' + first_id)
        stop = threading.Event()
        counts = [0] * SESSIONS
        errors = []

        def run(i):
            k = i
            while not stop.is_set():
                p = paths[k % len(paths)]
                k += 1
                try:
                    st, _, _ = clients[i].get(p)
                    if st != 200:
                        errors.append(st)
                    counts[i] += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        prof = None
        if profile_cmd:
            prof = subprocess.Popen(shlex.split(profile_cmd.format(pid=esd.proc.pid)))
        t0 = time.monotonic()
        loaded = bench(esd, seconds)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        if prof:
            prof.wait()
        for c in clients:
            c.close()
        res = {'quiet': quiet, 'loaded': loaded, 'web_rps': sum(counts) / elapsed, 'errors': len(errors)}
    finally:
        rc = esd.stop()
    if rc != 0:
        print('esd %s exited with status %s' % (binary, rc), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--esd', action='append', required=True)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=int, default=10)
    ap.add_argument('--profile-cmd', default='')
    ap.add_argument('--mix', choices=['console', 'console+id'], default='console+id',
                    help="the pages' requests, and with +id an event looked up by id")
    a = ap.parse_args()
    res = {b: [] for b in a.esd}
    for r in range(a.rounds):
        for b in a.esd:
            x = run_once(b, a.seconds, a.profile_cmd if r == 0 else '', a.mix)
            res[b].append(x)
            q, l = x['quiet'], x['loaded']
            print('round %d %s: quiet p50 %d us p99 %d us %.0f ev/s | web %.0f req/s (%d errors): '
                  'p50 %d us p99 %d us %.0f ev/s' %
                  (r + 1, b, q['p50_us'], q['p99_us'], q['events_per_sec'], x['web_rps'], x['errors'],
                   l['p50_us'], l['p99_us'], l['events_per_sec']), flush=True)
    for b, xs in res.items():
        med = lambda f: statistics.median(f(x) for x in xs)  # noqa: E731
        print('median %s: quiet p99 %.0f us, loaded p99 %.0f us (x%.2f), web %.0f req/s, appends %.0f -> %.0f ev/s' %
              (b, med(lambda x: x['quiet']['p99_us']), med(lambda x: x['loaded']['p99_us']),
               med(lambda x: x['loaded']['p99_us'] / max(1, x['quiet']['p99_us'])), med(lambda x: x['web_rps']),
               med(lambda x: x['quiet']['events_per_sec']), med(lambda x: x['loaded']['events_per_sec'])))


if __name__ == '__main__':
    main()
