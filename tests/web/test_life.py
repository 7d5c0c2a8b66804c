"""The web console's stream lifecycle calls, correlation links and
connection cap, without a browser:
  - the stream page's lifecycle state (metadata, deleted, tombstoned);
  - POST /api/stream/delete, /tombstone, /metadata: roles exactly as on the
    TCP port (delete and metadata: write; tombstone: admin), CSRF, an
    explicit expected revision (a stale one is 409 with the actual one),
    bad input 400, an unknown stream 404, a tombstoned one 410, and the
    effect seen through esctl (the TCP port);
  - correlation/causation ids resolved to positions through the event-id
    index, null when no event has the id; GET /api/event?id= the same;
  - --http-max-connections: one connection over the cap gets 503 and is
    closed, the others are unaffected, and a place freed is served again;
  - a request pipelined behind another on one connection is answered."""
import json
import os
import socket
import subprocess
import time

from webh import ADMIN, READER, WRITER, Client, Esd, check, finish

ORPHAN_CAUSE = '5a5a5a5a-5a5a-405a-9a5a-5a5a5a5a5a5a'

esd = Esd(auth=True, args=['--http-max-connections', '6'])
try:
    needle, first_id = esd.seed(20)
    for i in range(5):
        esd.esctl('append', 'life-1', 'Counted', '{"n":%d}' % i)
    esd.esctl('append', 'life-2', 'Counted', '{"n":0}')
    esd.esctl('append', 'life-3', 'Counted', '{"n":0}')
    admin, reader, writer = Client(esd), Client(esd), Client(esd)
    admin.login(ADMIN)
    j = reader.login(READER)
    check(j['write'] is False and j['admin'] is False, 'reader session: write false, admin false')
    j = writer.login(WRITER)
    check(j['write'] is True and j['admin'] is False, 'writer session: write true, admin false')

    # ---- the stream page shows the lifecycle state
    st, j, _ = reader.get('/api/stream?id=life-1')
    life = j['life']
    check(st == 200 and life == {'tombstoned': False, 'deleted': False, 'deleted_before': 0, 'metadata_set': False,
                                 'metadata_revision': None, 'truncate_before': 0, 'max_count': 0, 'max_age_s': 0},
          'stream page: lifecycle state of a plain stream (%s)' % life)

    # ---- roles, exactly as on the TCP port
    meta = {'stream': 'life-1', 'expected_metadata_revision': None, 'truncate_before': 1, 'max_count': 3,
            'max_age_s': 86400}
    st, _, _ = reader.post('/api/stream/metadata', meta)
    check(st == 403, 'reader sets metadata: 403')
    st, _, _ = reader.post('/api/stream/delete', {'stream': 'life-2', 'expected_revision': 0})
    check(st == 403, 'reader deletes: 403')
    st, _, _ = writer.post('/api/stream/tombstone', {'stream': 'life-3', 'expected_revision': 0})
    check(st == 403, 'writer tombstones: 403 (admin only, as on TCP)')
    out = esd.esctl('--json', 'info', 'life-3')
    check(json.loads(out.splitlines()[0])['last_revision'] == 0, 'the refused tombstone changed nothing (esctl)')

    # ---- CSRF on every change
    saved = writer.csrf
    writer.csrf = None
    st, _, _ = writer.post('/api/stream/delete', {'stream': 'life-2', 'expected_revision': 0})
    check(st == 403, 'delete without the CSRF token: 403')
    writer.csrf = '0' * 64
    st, _, _ = writer.post('/api/stream/metadata', meta)
    check(st == 403, 'metadata with a wrong CSRF token: 403')
    writer.csrf = saved
    st, _, _ = writer.request('POST', '/api/stream/delete', raw_body=b'stream=life-2&expected_revision=0',
                              headers={'Content-Type': 'application/x-www-form-urlencoded',
                                       'X-CSRF-Token': writer.csrf})
    check(st == 403, 'delete as a form post: 403')
    st, _, _ = writer.get('/api/stream/delete?stream=life-2&expected_revision=0')
    check(st == 405, 'delete by GET: 405')

    # ---- set metadata (writer), with explicit expectations
    st, j, _ = writer.post('/api/stream/metadata', meta)
    check(st == 200 and j['life']['metadata_revision'] == 0 and j['life']['max_count'] == 3
          and j['life']['truncate_before'] == 1 and j['life']['max_age_s'] == 86400,
          'writer sets metadata: 200, metadata revision 0 (%s %s)' % (st, j))
    st, j, _ = writer.post('/api/stream/metadata', meta)
    check(st == 409 and j['actual_revision'] == 0 and j['actual_exists'] is True,
          'metadata again expecting none set: 409 with the actual revision (%s)' % j)
    st, j, _ = reader.get('/api/stream?id=life-1')
    check(st == 200 and j['life']['metadata_set'] and [e['revision'] for e in j['events']] == [4, 3, 2],
          'stream page: metadata shown, max_count 3 honoured (%s)' % [e['revision'] for e in j['events']])
    out = json.loads(esd.esctl('--json', 'stream', 'meta', 'life-1').splitlines()[0])
    check(out.get('max_count') == 3 and out.get('truncate_before') == 1, 'esctl sees the metadata set on the web (%s)' % out)
    st, j, _ = writer.post('/api/stream/metadata', dict(meta, expected_metadata_revision=0, max_count=0,
                                                        truncate_before=0, max_age_s=0))
    check(st == 200 and j['life']['metadata_revision'] == 1 and j['life']['max_count'] == 0,
          'metadata with the right expected revision: 200, revision 1')

    # ---- bad input
    for body, what in [({'expected_revision': 0}, 'no stream'),
                       ({'stream': 'life-2'}, 'no expected revision'),
                       ({'stream': 'life-2', 'expected_revision': -1}, 'a negative revision'),
                       ({'stream': 'life-2', 'expected_revision': '0'}, 'a revision as a string'),
                       ({'stream': '$life', 'expected_revision': 0}, "a '$' stream"),
                       ({'stream': 'x' * 257, 'expected_revision': 0}, 'a 257-byte stream id'),
                       ({'stream': 'bad\u0001id', 'expected_revision': 0}, 'a control character')]:
        st, _, _ = writer.post('/api/stream/delete', body)
        check(st == 400, 'delete with %s: 400 (%d)' % (what, st))
    st, _, _ = writer.post('/api/stream/metadata', {'stream': 'life-2'})
    check(st == 400, 'metadata without expected_metadata_revision: 400')
    st, _, _ = writer.post('/api/stream/metadata', {'stream': 'life-2', 'expected_metadata_revision': None,
                                                    'max_age_s': 10 ** 12})
    check(st == 400, 'metadata with max_age_s above 100 years: 400')
    st, _, _ = writer.post('/api/stream/delete', {'stream': 'no-such-stream', 'expected_revision': 0})
    check(st == 404, 'delete of a stream that never existed: 404')

    # ---- delete (writer): a stale expectation first
    st, j, _ = writer.post('/api/stream/delete', {'stream': 'life-2', 'expected_revision': 5})
    check(st == 409 and j['actual_revision'] == 0, 'delete expecting revision 5 of a stream at 0: 409 (%s)' % j)
    st, j, _ = writer.post('/api/stream/delete', {'stream': 'life-2', 'expected_revision': 0})
    check(st == 200 and j['life']['deleted'] and j['last_revision'] == 0, 'writer deletes at revision 0: 200')
    st, j, _ = reader.get('/api/stream?id=life-2')
    check(st == 200 and j['life']['deleted'] and j['events'] == [] and j['info']['last_revision'] == 0,
          'stream page of a deleted stream: its state, no events')
    r = subprocess.run([os.environ['ESCTL_BIN'], '-s', esd.address, 'read', 'life-2'], capture_output=True,
                       env=esd.env(ADMIN))
    check(r.returncode != 0, 'esctl no longer reads the deleted stream')

    # ---- tombstone (admin)
    st, j, _ = admin.post('/api/stream/tombstone', {'stream': 'life-3', 'expected_revision': 0})
    check(st == 200 and j['life']['tombstoned'], 'admin tombstones: 200')
    st, j, _ = reader.get('/api/stream?id=life-3')
    check(st == 200 and j['life']['tombstoned'] and j['events'] == [], 'stream page of a tombstoned stream')
    st, _, _ = writer.post('/api/stream/metadata', {'stream': 'life-3', 'expected_metadata_revision': None})
    check(st == 410, 'metadata on a tombstoned stream: 410')
    r = subprocess.run([os.environ['ESCTL_BIN'], '-s', esd.address, 'append', 'life-3', 'T', '{}'],
                       capture_output=True, env=esd.env(ADMIN))
    check(r.returncode != 0, 'esctl cannot append to the tombstoned stream')

    # ---- correlation and causation links by event id
    st, j, _ = reader.get('/api/stream?id=' + needle)
    by_type = {e['type']: e for e in j['events']}
    placed = by_type['OrderPlaced']
    paid = by_type['OrderPaid']
    check(paid['causation_position'] == placed['position'] and paid['correlation_position'] == placed['position'],
          'stream: correlation and causation ids resolved to the position of the event they name')
    check('causation_position' not in placed and 'correlation_position' not in placed,
          'no link fields for an event without those ids')
    st, j, _ = reader.get('/api/stream?id=orphan-orders-7')
    orphan = j['events'][0]
    check(orphan['causation_id'] == ORPHAN_CAUSE and orphan['causation_position'] is None
          and orphan['correlation_position'] == placed['position'],
          'an id that no event has: position null (%s)' % orphan)
    st, j, _ = reader.get('/api/event?id=' + first_id)
    check(st == 200 and j['position'] == placed['position'], 'event by id: through the index')
    st, j, _ = reader.get('/api/event?id=' + ORPHAN_CAUSE)
    check(st == 404 and 'no event' in j['error'], 'event by an unknown id: 404, said plainly')
    st, j, _ = reader.get('/api/event?id=zz')
    check(st == 400, 'event by a malformed id: 400')
    st, j, _ = reader.get('/api/log?limit=200&dir=forward')
    check(all(e['stream'] != 'life-2' for e in j['events']), 'the log no longer serves the deleted stream')

    # ---- a request pipelined behind another on one connection
    s = socket.create_connection(('127.0.0.1', esd.http_port), timeout=30)
    req = ('GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: esd_session=%s\r\n\r\n' % reader.cookie).encode()
    s.sendall(req + req)
    got = b''
    deadline = time.monotonic() + 30
    while got.count(b'HTTP/1.1 200') < 2 and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    check(got.count(b'HTTP/1.1 200') == 2, 'two pipelined requests on one connection: both answered')

    # ---- the connection cap: 3 clients hold connections (admin, reader,
    # writer); 3 more fill the cap of 6, the 7th is refused and closed
    extra = []
    for i in range(3):
        c = Client(esd)
        c.cookie = reader.cookie
        st, _, _ = c.get('/api/overview')
        extra.append(c)
    check(all(c.get('/api/session')[0] == 200 for c in extra), 'connections up to the cap are served')
    over = socket.create_connection(('127.0.0.1', esd.http_port), timeout=30)
    over.sendall(('GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: esd_session=%s\r\n\r\n' %
                  reader.cookie).encode())
    got = b''
    closed = False
    while True:
        try:
            chunk = over.recv(65536)
        except OSError:
            break
        if not chunk:
            closed = True  # the server closed it (EOF), as it said it would
            break
        got += chunk
    over.close()
    head = got.split(b'\r\n\r\n')[0].lower()
    check(got.startswith(b'HTTP/1.1 503') and b'connection: close' in head and b'too many' in got,
          'a connection over the cap: 503, Connection: close (%r)' % got[:40])
    check(closed, 'the refused connection is closed by the server')
    st, _, _ = reader.get('/api/overview')
    check(st == 200, 'connections within the cap are unaffected')
    extra.pop().close()
    deadline = time.monotonic() + 30
    st = None
    while time.monotonic() < deadline:
        c = Client(esd)
        c.cookie = reader.cookie
        try:
            st, _, _ = c.get('/api/overview')
        except OSError:
            st = None
        c.close()
        if st == 200:
            break
        time.sleep(0.05)
    check(st == 200, 'a place freed by a closed connection is served again')
    st, o, _ = admin.get('/api/overview')
    check(st == 200 and o['web_connections_refused'] >= 1 and o['web_connections'] <= 6,
          'overview: web connections and refusals counted (%s, %s)' % (o.get('web_connections'),
                                                                       o.get('web_connections_refused')))
    log = esd.log_text()
    check('web stream lifecycle change' in log and 'user=carol change=delete' in log,
          'lifecycle changes are logged with the user')
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly (status %s)' % rc)
finish()
