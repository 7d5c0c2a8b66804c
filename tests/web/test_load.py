"""Load on the web console: 100 concurrent sessions (each logged in, each
cycling through the overview, a streams page, a stream page and a log page)
for LOAD_SECONDS (default 30), with every reply checked (200 and a JSON
body of the right shape: no error allowed). Each session makes PACE_HZ
requests a second (default 2: twice the rate of an open overview page,
which refreshes once a second); PACE_HZ=0 sends back to back (a stress
figure: the console shares the loop thread with the TCP port). Meanwhile, and before, esbench
appends over TCP; the appends' p99 with and without the web load is printed
for the report (speed is not asserted: the machine may be shared)."""
import json
import os
import subprocess
import threading
import time

from webh import ADMIN, READER, Client, Esd, check, finish

SESSIONS = 100
SECONDS = float(os.environ.get('LOAD_SECONDS', '30'))
PACE_HZ = float(os.environ.get('PACE_HZ', '2'))
BENCH_SECONDS = str(int(SECONDS))


def bench(esd):
    out = subprocess.run([os.environ['ESBENCH_BIN'], '-s', esd.address, 'append', '--connections', '4',
                          '--duration', BENCH_SECONDS, '--json'],
                         capture_output=True, env=esd.env(ADMIN), check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


esd = Esd(auth=True)
errors = []
counts = [0] * SESSIONS
try:
    needle, _ = esd.seed(2000)
    quiet = bench(esd)

    clients = []
    for i in range(SESSIONS):
        c = Client(esd)
        c.login(ADMIN if i % 2 == 0 else READER)
        clients.append(c)
    stop = threading.Event()
    paths = ['/api/overview', '/api/streams?prefix=load-0&limit=50', '/api/stream?id=' + needle,
             '/api/log?limit=20', '/api/streams?prefix=needle']

    def run(i):
        c = clients[i]
        k = i
        period = 1.0 / PACE_HZ if PACE_HZ > 0 else 0
        # spread the sessions over the period, then one request per period
        next_at = time.monotonic() + period * i / SESSIONS
        while not stop.is_set():
            if period and stop.wait(max(0, next_at - time.monotonic())):
                break
            next_at += period
            p = paths[k % len(paths)]
            k += 1
            try:
                st, j, _ = c.get(p)
                if st != 200 or not isinstance(j, dict) or 'error' in j:
                    errors.append('%s: %s %s' % (p, st, j))
                counts[i] += 1
            except Exception as e:  # noqa: BLE001 - any failure is an error of the run
                errors.append('%s: %r' % (p, e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(SESSIONS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    loaded = bench(esd)
    remaining = SECONDS - (time.monotonic() - t0)
    if remaining > 0:
        stop.wait(remaining)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = sum(counts)
    st, o, _ = clients[0].get('/api/overview')
    for c in clients:
        c.close()
    print('web load: %d sessions at %s requests/s each, %d requests in %.1f s (%.0f/s), %d errors' %
          (SESSIONS, PACE_HZ or 'unpaced', total, elapsed, total / elapsed, len(errors)))
    print('TCP appends (esbench append, 4 connections, %s s): p50 %d us, p99 %d us, %.0f events/s without '
          'the web load; p50 %d us, p99 %d us, %.0f events/s with it (p99 ratio %.2f)' %
          (BENCH_SECONDS, quiet['p50_us'], quiet['p99_us'], quiet['events_per_sec'], loaded['p50_us'],
           loaded['p99_us'], loaded['events_per_sec'], loaded['p99_us'] / max(1, quiet['p99_us'])))
    check(not errors, 'no error under %d concurrent sessions (%s)' % (SESSIONS, errors[:3]))
    check(all(n > 0 for n in counts), 'every session was served')
    check(st == 200 and o['web_sessions'] == SESSIONS, 'all %d sessions still alive afterwards' % SESSIONS)
    check(loaded['errors'] == 0 and quiet['errors'] == 0, 'esbench appends without errors')
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly')
finish()
