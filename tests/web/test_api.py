"""The web console's JSON API without a browser: every endpoint, the role
rules, 401/403/404/405, CSRF, static files and path traversal, the session
cookie's attributes, expiry by logout and by an admin, secrets kept out of
the log, and the console's refusal to start open on a non-loopback address."""
import http.client
import json
import os
import subprocess
import tempfile
import time
import urllib.parse

from webh import ADMIN, READER, WRITER, Client, Esd, check, finish

esd = Esd(auth=True)
try:
    needle, first_id = esd.seed(1200)
    # An event that is not UTF-8 and one too big for a list.
    esd.esctl('append', 'blob-1', 'Raw', '-', '--content-type', 'application/octet-stream',
              data=b'\xff\x00<b>\x80')
    big = json.dumps({'pad': 'x' * 5000})
    esd.esctl('append', 'big-1', 'Big', big)

    anon = Client(esd)
    # ---- without a session: health open, API closed, pages served
    st, body, _ = anon.get('/healthz')
    check(st == 200 and body == b'ok\n', 'GET /healthz without login: 200')
    st, body, _ = anon.get('/readyz')
    check(st == 200, 'GET /readyz without login: 200')
    for path in ['/api/overview', '/api/streams', '/api/stream?id=x', '/api/log', '/api/event?position=1',
                 '/api/tail', '/api/sessions', '/api/session']:
        st, _, _ = anon.get(path)
        check(st == 401, 'GET %s without a session: 401' % path)
    st, _, _ = anon.post('/api/logout', {})
    check(st == 401, 'POST /api/logout without a session: 401')
    st, body, r = anon.get('/')
    csp = r.getheader('Content-Security-Policy') or ''
    check(st == 200 and b'/assets/app.js' in body and "script-src 'self'" in csp,
          'GET / serves the page with a CSP that allows only its own scripts')
    for name, ctype in [('app.js', 'text/javascript'), ('app.css', 'text/css'), ('index.html', 'text/html')]:
        st, body, r = anon.get('/assets/' + name)
        check(st == 200 and len(body) > 100 and r.getheader('Content-Type').startswith(ctype),
              'GET /assets/%s: 200 %s' % (name, ctype))
    for path in ['/assets/../../../../etc/passwd', '/assets/%2e%2e/%2e%2e/etc/passwd', '/assets/..%2f..%2fetc%2fpasswd',
                 '/../../etc/passwd', '/assets//etc/passwd', '/assets/', '/etc/passwd', '/assets/app.js/..']:
        st, body, _ = anon.get(path)
        check(st in (400, 404) and b'root:' not in (body if isinstance(body, bytes) else json.dumps(body).encode()),
              'path traversal %s refused (%d)' % (path, st))
    st, _, _ = anon.get('/api/nothing')
    check(st == 404, 'unknown API call: 404')
    st, _, _ = anon.request('DELETE', '/api/overview')
    check(st in (405, 501), 'DELETE refused (%d: libevent answers methods it was not given with 501)' % st)
    st, _, _ = anon.get('/nothing')
    check(st == 404, 'unknown page: 404')

    # ---- login
    st, j, _ = anon.post('/api/login', {'user': ADMIN[0], 'token': 'wrong-token'})
    check(st == 401, 'login with a wrong token: 401')
    st, j, _ = anon.post('/api/login', {'user': ADMIN[0]})
    check(st == 400, 'login without a token: 400')
    st, j, _ = anon.request('POST', '/api/login', raw_body=json.dumps({'user': ADMIN[0], 'token': ADMIN[1]}).encode(),
                            headers={'Content-Type': 'application/x-www-form-urlencoded'})
    check(st == 403 and anon.cookie is None, 'login as a form post (cross-site form): 403, no session')
    st, j, _ = anon.request('POST', '/api/login', body={'user': ADMIN[0], 'token': ADMIN[1]},
                            headers={'Origin': 'http://evil.example'})
    check(st == 403 and anon.cookie is None, 'login from another origin: 403')
    st, j, _ = anon.request('POST', '/api/login', raw_body=b'{' + b' ' * 5000 + b'}',
                            headers={'Content-Type': 'application/json'})
    check(st in (400, 413), 'login body over the cap refused (%d)' % st)
    anon.conn.close()

    admin = Client(esd)
    st, j, r = admin.post('/api/login', {'user': ADMIN[0], 'token': ADMIN[1]})
    cookie_hdr = r.getheader('Set-Cookie') or ''
    check(st == 200 and j['role'] == 'admin' and j['user'] == 'alice', 'admin login: 200, role admin')
    check('HttpOnly' in cookie_hdr and 'SameSite=Strict' in cookie_hdr and 'Path=/' in cookie_hdr,
          'session cookie is HttpOnly, SameSite=Strict')
    check('Secure' not in cookie_hdr, 'no Secure flag over plain HTTP')
    admin.csrf = j['csrf']
    st, j, _ = admin.get('/api/session')
    check(st == 200 and j['csrf'] == admin.csrf and j['admin'] is True, 'GET /api/session: the same CSRF token')

    # ---- every read endpoint
    st, o, _ = admin.get('/api/overview')
    stats = esd.esctl('--json', 'stats')
    check(st == 200 and o['head'] == json.loads(stats.splitlines()[0])['head_position']
          and o['head'] >= 1203, 'overview: head %s as esctl stats reports' % o.get('head'))
    check(o['streams'] >= 1203 and o['events'] == o['head'] and o['map_used'] > 0, 'overview: streams, events, map use')
    check(set(o['series']) == {'t_s', 'appends_per_s', 'events_per_s'}, 'overview: appends/s and events/s series')
    check('batch_avg' in o['commits'] and 'latency_p99_us' in o['commits'], 'overview: commit batch and latency')
    check(o['relay'] is None and o['follow'] is None and o['role'] == 'primary', 'overview: no relay, no follower')

    st, j, _ = admin.get('/api/streams?prefix=needle')
    check(st == 200 and [s['id'] for s in j['streams']] == [needle] and j['streams'][0]['event_count'] == 3,
          'streams?prefix=needle finds the one stream among 1200')
    st, j, _ = admin.get('/api/streams?prefix=load-&limit=500')
    check(st == 200 and len(j['streams']) == 500 and j['more'] and j['next_after'] == 'load-00499',
          'streams page of 500 with more and next_after')
    st, j2, _ = admin.get('/api/streams?prefix=load-&limit=500&after=' + urllib.parse.quote(j['next_after']))
    check(st == 200 and j2['streams'][0]['id'] == 'load-00500', 'streams: the next page starts after next_after')
    st, j, _ = admin.get('/api/streams?limit=100000')
    check(st == 200 and len(j['streams']) == 500, 'streams: limit capped at 500')
    st, j, _ = admin.get('/api/streams?limit=abc')
    check(st == 400, 'streams: a bad limit is 400')

    st, j, _ = admin.get('/api/stream?id=' + needle)
    revs = [e['revision'] for e in j['events']]
    check(st == 200 and revs == [2, 1, 0], 'stream: events newest first')
    paid = j['events'][1]
    check(paid['type'] == 'OrderPaid' and paid['causation_id'] == first_id and paid['correlation_id'] == first_id,
          'stream: correlation and causation ids')
    blob = j['events'][0]
    check(blob['data']['encoding'] == 'hex' and blob['data']['text'] == '00fffe41420a80', 'non-UTF-8 data as hex')
    st, j, _ = admin.get('/api/stream?id=' + needle + '&limit=1&from=1')
    check(st == 200 and [e['revision'] for e in j['events']] == [1] and j['next'] == 0, 'stream paging: from and next')
    st, j, _ = admin.get('/api/stream?id=no-such-stream')
    check(st == 404, 'stream: unknown stream is 404')
    st, j, _ = admin.get('/api/stream')
    check(st == 400, 'stream: no id is 400')

    st, j, _ = admin.get('/api/log?limit=5')
    pos = [e['position'] for e in j['events']]
    check(st == 200 and pos == sorted(pos, reverse=True) and pos[0] == o['head'], 'log: newest first from the head')
    bige = j['events'][0]
    check(bige['type'] == 'Big' and bige['data']['truncated'] and bige['data']['bytes'] == len(big),
          'log: a big event is truncated in lists')
    st, j, _ = admin.get('/api/event?position=%d' % bige['position'])
    check(st == 200 and j['data']['text'] == big and not j['data']['truncated'], 'event: the whole of a big event')
    st, j, _ = admin.get('/api/event?id=' + first_id)
    check(st == 200 and j['type'] == 'OrderPlaced', 'event by id (correlation link target)')
    st, j, _ = admin.get('/api/event?position=999999')
    check(st == 404, 'event: no such position is 404')
    st, j, _ = admin.get('/api/event?id=00000000-0000-0000-0000-000000000000')
    check(st == 404, 'event: no such id is 404')
    st, j, _ = admin.get('/api/log?category=needle')
    check(st == 200 and {e['stream'] for e in j['events']} == {needle}, 'log: category filter')
    st, j, _ = admin.get('/api/log?type=OrderPaid')
    check(st == 200 and [e['type'] for e in j['events']] == ['OrderPaid'], 'log: type filter')
    st, j, _ = admin.get('/api/log?prefix=blob')
    check(st == 200 and [e['stream'] for e in j['events']] == ['blob-1'], 'log: prefix filter')
    st, j, _ = admin.get('/api/log?category=a&type=b')
    check(st == 400, 'log: two filters is 400')
    st, j, _ = admin.get('/api/log?dir=forward&limit=2')
    check(st == 200 and [e['position'] for e in j['events']] == [1, 2] and j['next'] == 3, 'log: forward paging')

    # ---- the live tail (server-sent events)
    tail = Client(esd)
    tail.cookie = admin.cookie
    tail.conn.request('GET', '/api/tail?category=needle', headers={'Cookie': 'esd_session=' + admin.cookie})
    tr = tail.conn.getresponse()
    check(tr.status == 200 and tr.getheader('Content-Type').startswith('text/event-stream'), 'tail: an event stream')
    esd.esctl('append', 'other-1', 'Noise', '{}')
    esd.esctl('append', needle, 'OrderShipped', '{"order":42}')
    got = None
    while got is None:
        line = tr.fp.readline().decode()
        if line.startswith('data: '):
            got = json.loads(line[6:])
    check(got['type'] == 'OrderShipped' and got['stream'] == needle, 'tail: the appended event, filter applied')

    # ---- roles: a reader
    reader = Client(esd)
    j = reader.login(READER)
    check(j['role'] == 'read' and j['admin'] is False, 'reader login: role read')
    for path in ['/api/overview', '/api/streams', '/api/stream?id=' + needle, '/api/log', '/api/event?position=1']:
        st, _, _ = reader.get(path)
        check(st == 200, 'reader may GET %s' % path.split('?')[0])
    st, _, _ = reader.get('/api/sessions')
    check(st == 403, 'reader GET /api/sessions: 403')
    st, j, _ = admin.get('/api/sessions')
    handles = {s['user']: s['handle'] for s in j['sessions']}
    check(st == 200 and {'alice', 'bob'} <= set(handles), 'admin lists the web sessions')
    st, _, _ = reader.post('/api/sessions/end', {'handle': handles['alice']})
    check(st == 403, 'reader forging an admin action with its own CSRF token: 403')
    st, _, _ = admin.get('/api/overview')
    check(st == 200, 'the admin session survived the forged request')
    writer = Client(esd)
    writer.login(WRITER)
    st, _, _ = writer.get('/api/sessions')
    check(st == 403, 'writer GET /api/sessions: 403 (admin only)')

    # ---- CSRF
    saved = admin.csrf
    admin.csrf = None
    st, _, _ = admin.post('/api/sessions/end', {'handle': handles['bob']})
    check(st == 403, 'admin POST without the CSRF token: 403')
    admin.csrf = '0' * 64
    st, _, _ = admin.post('/api/sessions/end', {'handle': handles['bob']})
    check(st == 403, 'admin POST with a wrong CSRF token: 403')
    admin.csrf = saved
    st, _, _ = admin.request('POST', '/api/sessions/end', body={'handle': handles['bob']},
                             headers={'Origin': 'http://evil.example'})
    check(st == 403, 'admin POST from another origin: 403')
    st, _, _ = admin.request('POST', '/api/sessions/end', raw_body=b'handle=' + handles['bob'].encode(),
                             headers={'Content-Type': 'text/plain', 'X-CSRF-Token': admin.csrf})
    check(st == 403, 'admin POST as text/plain: 403')
    st, _, _ = admin.get('/api/sessions/end')
    check(st == 405, 'GET on a POST call: 405')
    st, _, _ = reader.get('/api/overview')
    check(st == 200, 'the reader session survived the refused requests')

    # ---- an admin ends the reader's session; logout ends one's own
    st, j, _ = admin.post('/api/sessions/end', {'handle': handles['bob']})
    check(st == 200, 'admin ends the reader session (with CSRF)')
    st, _, _ = reader.get('/api/overview')
    check(st == 401, 'the ended session is refused: 401')
    st, j, _ = admin.post('/api/sessions/end', {'handle': handles['bob']})
    check(st == 404, 'ending it again: 404')
    old = admin.cookie
    st, _, r = admin.post('/api/logout', {})
    check(st == 200 and 'Max-Age=0' in (r.getheader('Set-Cookie') or ''), 'logout: 200, cookie cleared')
    admin.cookie = old
    st, _, _ = admin.get('/api/overview')
    check(st == 401, 'the logged-out cookie is refused: 401')
    # the tail of the logged-out session ends too: read() returns only at
    # the end of the reply (a live tail would send heartbeats until the
    # socket timeout fails the test)
    rest = b''
    while not rest.endswith(b'\r\n0\r\n'):
        line = tr.fp.readline()
        if not line:
            break
        rest += line
    check(rest.endswith(b'\r\n0\r\n') and b'data:' not in rest,
          'the tail of a logged-out session is ended by the server (last chunk sent)')

    # ---- caps: live tails, header block
    tails = []
    for i in range(64):
        t = Client(esd)
        t.conn.request('GET', '/api/tail', headers={'Cookie': 'esd_session=' + writer.cookie})
        tails.append((t, t.conn.getresponse()))
    check(all(r.status == 200 for _, r in tails), '64 live tails are served')
    st, j, _ = writer.get('/api/tail')
    check(st == 503, 'the 65th live tail: 503')
    for t, _ in tails:
        t.close()
    # the server notices the clients gone when it writes to them (an event,
    # or the heartbeat) and frees their tails: a new tail is served again
    esd.esctl('append', 'wake-1', 'Wake', '{}')
    deadline = time.monotonic() + 60
    live = None
    while time.monotonic() < deadline:
        st, o2, _ = writer.get('/api/overview')
        live = o2['web_tails']
        if live == 0:
            break
        time.sleep(0.2)
    check(live == 0, 'tails of clients that went away are freed (%s left)' % live)
    st, j, _ = writer.get('/api/overview')
    t = Client(esd)
    t.conn.request('GET', '/api/tail', headers={'Cookie': 'esd_session=' + writer.cookie})
    check(t.conn.getresponse().status == 200, 'a new tail is served after they went')
    t.close()
    st, _, _ = writer.get('/api/overview', headers={'X-Big': 'x' * 9000})
    check(st in (400, 413, 431), 'a header block over 8 KiB is refused (%d)' % st)

    # ---- failed logins count against the per-address limit (10 at once;
    # one failed above already, and the bucket refills one a second)
    lim = Client(esd)
    codes = [lim.post('/api/login', {'user': 'alice', 'token': 'wrong-%d' % i})[0] for i in range(11)]
    first = codes.index(429) if 429 in codes else None
    check(first in (8, 9, 10) and set(codes[:first]) == {401} and set(codes[first:]) == {429},
          'failed logins beyond the 10 an address may have: 429 (%s)' % codes)
    st, _, _ = lim.post('/api/login', {'user': ADMIN[0], 'token': ADMIN[1]})
    check(st == 429 and lim.cookie is None, 'over the limit even the right token is not checked: 429')

    log = esd.log_text()
    secrets = [ADMIN[1], READER[1], WRITER[1], saved, old]
    check(not any(s in log for s in secrets), 'no token, cookie or CSRF token in the log')
    check('web login failed' in log and 'web login ' in log, 'logins and failures are logged')
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly (status %s)' % rc)

# ---- without an auth file: loopback only unless --insecure; open reads
esd = Esd(auth=False)
try:
    c = Client(esd)
    st, _, _ = c.get('/api/overview')
    check(st == 200, 'no auth file: reads need no login')
    st, _, _ = c.post('/api/logout', {})
    check(st == 401, 'no auth file: a POST still needs a session')
    st, j, _ = c.get('/api/session')
    check(st == 200 and j['role'] == 'admin' and j['auth'] is False and c.cookie, 'no auth file: anonymous admin session')
    c.csrf = j['csrf']
    st, _, _ = c.post('/api/login', {'user': 'x', 'token': 'y'})
    check(st == 400, 'no auth file: login is 400')
    st, _, _ = c.post('/api/logout', {})
    check(st == 200, 'no auth file: logout with the CSRF token')
    for host in ['localhost:%d' % esd.http_port, '127.0.0.1', '[::1]:80']:
        st, _, _ = c.get('/api/overview', headers={'Host': host})
        check(st == 200, 'no auth file: Host %s is served' % host)
    for host in ['evil.example:%d' % esd.http_port, '127.0.0.1.evil.example', 'localhost.evil', '']:
        st, _, _ = c.get('/api/overview', headers={'Host': host})
        check(st == 403, 'no auth file: Host %r refused (DNS rebinding)' % host)
finally:
    esd.stop()
# ---- over TLS: the TCP port's certificate, Secure cookies, no plaintext
esd = Esd(auth=True, tls=True)
try:
    c = Client(esd)
    st, _, _ = c.get('/api/overview')
    check(st == 401, 'TLS: the API needs a login')
    st, j, r = c.post('/api/login', {'user': ADMIN[0], 'token': ADMIN[1]})
    cookie_hdr = r.getheader('Set-Cookie') or ''
    check(st == 200 and 'Secure' in cookie_hdr and 'HttpOnly' in cookie_hdr, 'TLS: login sets a Secure cookie')
    check('max-age' in (r.getheader('Strict-Transport-Security') or ''), 'TLS: Strict-Transport-Security')
    st, o, _ = c.get('/api/overview')
    check(st == 200 and o['head'] == 0, 'TLS: overview over HTTPS')
    c.close()
    plain = http.client.HTTPConnection('127.0.0.1', esd.http_port, timeout=30)
    try:
        plain.request('GET', '/api/overview')
        got = plain.getresponse().status
    except (http.client.HTTPException, OSError):
        got = None
    check(got is None, 'TLS: a plaintext request gets no HTTP answer (%s)' % got)
finally:
    esd.stop()

with tempfile.TemporaryDirectory() as tmp:
    out = subprocess.run([os.environ['ESD_BIN'], '--data-dir', os.path.join(tmp, 'data'),
                          '--listen', '127.0.0.1:0', '--http-listen', '0.0.0.0:0'],
                         capture_output=True, timeout=30)
check(out.returncode != 0 and b'web console' in out.stderr, 'no auth file: a non-loopback --http-listen is refused')
finish()
