"""The web console's consumer-group calls, without a browser:
  - GET /api/groups, /api/group?name=, /api/group/parked?name=&after=&limit=:
    the figures esctl reports (checkpoint, lag = head - checkpoint, members,
    in flight, parked, settings), the members with their events in flight,
    parked events with their stream, revision (null once the log no longer
    serves the event), type, attempts, reason and time, paged;
  - POST /api/group/replay and /api/group/delete: admin only, as on the TCP
    port (a reader's or writer's forged request: 403), CSRF on both, bad
    input 400, an unknown group 404, and the effect seen through esctl;
  - names that need escaping (HTML characters, non-ASCII) round-trip;
  - a client that closes its connection right after a delete: deleted all
    the same, the console goes on;
  - a follower: every group call is 409 (groups live on the primary);
  - 10,000 parked events: every page in order, none twice, none missed
    (each page's time printed, not asserted).
Members are tests/web/web_member (the public client library): one parks
events with a reason, one holds events in flight, one acks."""
import json
import os
import socket
import subprocess
import time
import urllib.parse

from webh import ADMIN, READER, WRITER, Client, Esd, check, finish

MEMBER = os.environ['WEB_MEMBER_BIN']
ODD = 'odd <b>&"名前"'


def member(esd, group, mode, count, reason=None):
    """Runs web_member to completion; returns its stdout line."""
    args = [MEMBER, esd.address, group, mode, str(count)] + ([reason] if reason else [])
    out = subprocess.run(args, capture_output=True, env=esd.env(ADMIN), timeout=120)
    if out.returncode != 0:
        raise AssertionError('web_member %s: %s' % (mode, out.stderr.decode()))
    return out.stdout.decode().strip()


def esctl_json(esd, *args):
    """esctl --json: a list of the objects it printed (an array line counts as its items)."""
    out = []
    for line in esd.esctl('--json', *args).splitlines():
        if line.strip():
            v = json.loads(line)
            out += v if isinstance(v, list) else [v]
    return out


def q(name):
    return urllib.parse.quote(name, safe='')


esd = Esd(auth=True)
try:
    esd.seed(250)  # load-00000 .. load-00249, one event each
    esd.esctl('group', 'create', 'orders', '--prefix', 'load-', '--from-start', '--max-retries', '2',
              '--ack-timeout-ms', '3600000')
    esd.esctl('group', 'create', ODD, '--category', 'needle', '--from-end')
    check(member(esd, 'orders', 'park', 120, 'bad data <x>') == 'parked 120', 'a member parked 120 events')
    holder = subprocess.Popen([MEMBER, esd.address, 'orders', 'hold', '5'], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=esd.env(READER))
    check(holder.stdout.readline().decode().strip() == 'holding 5', 'a member (the reader) holds 5 events')

    anon, admin, reader, writer = Client(esd), Client(esd), Client(esd), Client(esd)
    admin.login(ADMIN)
    reader.login(READER)
    writer.login(WRITER)

    # ---- without a session
    for path in ['/api/groups', '/api/group?name=orders', '/api/group/parked?name=orders']:
        st, _, _ = anon.get(path)
        check(st == 401, 'GET %s without a session: 401' % path.split('?')[0])
    for path in ['/api/group/delete', '/api/group/replay']:
        st, _, _ = anon.post(path, {'name': 'orders'})
        check(st == 401, 'POST %s without a session: 401' % path)

    # ---- the list, as esctl reports it
    st, j, _ = reader.get('/api/groups')
    names = [g['name'] for g in j['groups']] if st == 200 else []
    check(st == 200 and names == sorted(names) and set(names) == {'orders', ODD},
          'reader lists the groups, in name order (%s)' % names)
    g = {x['name']: x for x in j['groups']}['orders']
    info = esctl_json(esd, 'group', 'info', 'orders')[0]
    check(g['target'] == 'prefix' and g['target_name'] == 'load-', 'list: target and target name')
    check(g['checkpoint'] == info['checkpoint'] and g['parked'] == info['parked'] == 120
          and g['members'] == info['members'] == 1 and g['in_flight'] == info['in_flight'] == 5,
          'list: checkpoint, parked, members and in flight as esctl group info says (%s / %s)' % (g, info))
    check(g['lag'] == g['head'] - g['checkpoint'] and g['head'] == j['head'], 'list: lag = head - checkpoint')
    check(g['settings'] == {'ack_timeout_ms': 3600000, 'max_retries': 2, 'max_in_flight': 1000,
                            'park_blocks': False}, 'list: settings (%s)' % g['settings'])
    odd = {x['name']: x for x in j['groups']}[ODD]
    check(odd['target'] == 'category' and odd['target_name'] == 'needle' and odd['parked'] == 0,
          'list: a name with HTML and non-ASCII characters, as it is')

    # ---- one group, with its members
    st, j, _ = reader.get('/api/group?name=orders')
    check(st == 200 and j['name'] == 'orders' and j['parked'] == 120 and j['settings']['max_retries'] == 2,
          'group: its figures and settings')
    ml = j.get('member_list', [])
    check(len(ml) == 1 and ml[0]['consumer'] == 'web-member-hold' and ml[0]['user'] == READER[0]
          and ml[0]['in_flight'] == 5 and ml[0]['max_in_flight'] == 5 and ml[0]['peer'].startswith('127.0.0.1'),
          'group: its member, user, address and events in flight (%s)' % ml)
    st, j, _ = reader.get('/api/group?name=' + q(ODD))
    check(st == 200 and j['name'] == ODD and j['member_list'] == [], 'group by an escaped name: 200, no members')
    st, j, _ = reader.get('/api/group?name=nope')
    check(st == 404 and 'no such consumer group' in j['error'], 'group: an unknown group is 404')
    st, _, _ = reader.get('/api/group')
    check(st == 400, 'group: no name is 400')
    st, _, _ = reader.get('/api/group?name=' + 'x' * 257)
    check(st == 400, 'group: a 257-byte name is 400')
    st, _, _ = reader.get('/api/group?name=a%01b')
    check(st == 400, 'group: a control character is 400')

    # ---- parked events, paged
    st, p1, _ = reader.get('/api/group/parked?name=orders')
    check(st == 200 and len(p1['events']) == 50 and p1['more'] and p1['next_after'] == p1['events'][-1]['position'],
          'parked: a first page of 50, more, next_after')
    e = p1['events'][0]
    check(e['stream'].startswith('load-') and e['revision'] == 0 and e['type'] == 'Seeded' and e['attempts'] == 1
          and e['reason'] == 'bad data <x>' and e['parked_at_us'] > 1.6e15,
          'parked: stream, revision, type, attempts, reason, parked time (%s)' % e)
    st, p2, _ = reader.get('/api/group/parked?name=orders&after=%d' % p1['next_after'])
    st3, p3, _ = reader.get('/api/group/parked?name=orders&limit=50&after=%d' % p2['next_after'])
    got = [x['position'] for x in p1['events'] + p2['events'] + p3['events']]
    listed = [x['position'] for x in esctl_json(esd, 'group', 'parked', 'orders')]
    check(st3 == 200 and len(p3['events']) == 20 and not p3['more'] and p3['next_after'] is None,
          'parked: the last page of 20, no more')
    check(got == sorted(set(got)) and got == listed, 'parked: three pages = esctl group parked, in order, none twice')
    st, j, _ = reader.get('/api/group/parked?name=orders&limit=100000')
    check(st == 200 and len(j['events']) == 120, 'parked: limit capped (at 200), all 120 here')
    for bad in ['limit=0', 'limit=abc', 'after=-1', 'after=x']:
        st, _, _ = reader.get('/api/group/parked?name=orders&' + bad)
        check(st == 400, 'parked: %s is 400' % bad)
    st, _, _ = reader.get('/api/group/parked?name=nope')
    check(st == 404, 'parked: an unknown group is 404')
    # a parked event whose stream was deleted since: no revision, no type
    gone = p1['events'][3]
    esd.esctl('stream', 'delete', gone['stream'])
    st, j, _ = reader.get('/api/group/parked?name=orders&limit=10')
    ge = {x['position']: x for x in j['events']}[gone['position']]
    check(ge['revision'] is None and ge['type'] is None and ge['stream'] == gone['stream'],
          'parked: an event the log no longer serves has revision and type null, its stream kept')

    # ---- roles and CSRF on the changes
    for who, c in [('reader', reader), ('writer', writer)]:
        for path in ['/api/group/replay', '/api/group/delete']:
            st, _, _ = c.post(path, {'name': 'orders'})
            check(st == 403, '%s POST %s (with its CSRF token): 403' % (who, path))
    saved = admin.csrf
    admin.csrf = None
    st, _, _ = admin.post('/api/group/delete', {'name': 'orders'})
    check(st == 403, 'admin delete without the CSRF token: 403')
    admin.csrf = '0' * 64
    st, _, _ = admin.post('/api/group/replay', {'name': 'orders'})
    check(st == 403, 'admin replay with a wrong CSRF token: 403')
    admin.csrf = saved
    st, _, _ = admin.request('POST', '/api/group/delete', raw_body=b'name=orders',
                             headers={'Content-Type': 'application/x-www-form-urlencoded',
                                      'X-CSRF-Token': admin.csrf})
    check(st == 403, 'delete as a form post: 403')
    st, _, _ = admin.request('POST', '/api/group/delete', body={'name': 'orders'},
                             headers={'Origin': 'http://evil.example'})
    check(st == 403, 'delete from another origin: 403')
    st, _, _ = admin.get('/api/group/delete?name=orders')
    check(st == 405, 'delete by GET: 405')
    st, _, _ = admin.post('/api/groups', {})
    check(st == 405, 'POST on the list: 405')
    info = esctl_json(esd, 'group', 'info', 'orders')[0]
    check(info['parked'] == 120 and info['members'] == 1, 'the refused requests changed nothing (esctl)')

    # ---- bad input
    for body, what in [({}, 'no name'), ({'name': 5}, 'a number'), ({'name': ''}, 'an empty name'),
                       ({'name': 'x' * 257}, 'a 257-byte name')]:
        st, _, _ = admin.post('/api/group/replay', body)
        check(st == 400, 'replay with %s: 400' % what)
    st, j, _ = admin.post('/api/group/replay', {'name': 'nope'})
    check(st == 404, 'replay of an unknown group: 404')

    # ---- replay: the parked events are delivered again; acked, they leave
    st, j, _ = admin.post('/api/group/replay', {'name': 'orders'})
    check(st == 200 and j == {'group': 'orders', 'replayed': 119},
          'admin replays: 200, 119 put back (the deleted stream\'s event is not served) (%s)' % j)
    # 250 matching events: 5 held, one deleted since; the rest come to the acker
    check(member(esd, 'orders', 'ack', 244) == 'acked 244', 'a member acks the replayed and the pending events')
    left = [x['position'] for x in esctl_json(esd, 'group', 'parked', 'orders')]
    check(left == [gone['position']], 'after the acks only the unserved event is still parked (esctl: %s)' % left)
    st, j, _ = reader.get('/api/group?name=orders')
    check(st == 200 and j['parked'] == 1 and j['in_flight'] == 5, 'the group page agrees: 1 parked, 5 in flight')

    # ---- delete
    st, j, _ = admin.post('/api/group/delete', {'name': 'orders'})
    check(st == 200 and j['group'] == 'orders' and j['deleted'] is True, 'admin deletes: 200 (%s)' % j)
    r = subprocess.run([os.environ['ESCTL_BIN'], '-s', esd.address, 'group', 'info', 'orders'],
                       capture_output=True, env=esd.env(ADMIN))
    check(r.returncode != 0, 'esctl group info no longer finds it')
    check([x['name'] for x in esctl_json(esd, 'group', 'list')] == [ODD], 'esctl group list: only the other one')
    st, _, _ = reader.get('/api/group?name=orders')
    check(st == 404, 'the group page: 404')
    st, _, _ = admin.post('/api/group/delete', {'name': 'orders'})
    check(st == 404, 'deleting it again: 404')
    holder.stdin.close()
    holder.wait(60)

    # ---- a client that closes its connection right after sending a delete
    # (evhttp reads no more of a connection while its request is open, so it
    # notices only when the answer is written: the delete is made and
    # answered into the void; the server goes on)
    esd.esctl('group', 'create', 'short-lived', '--all')
    body = json.dumps({'name': 'short-lived'}).encode()
    s = socket.create_connection(('127.0.0.1', esd.http_port), timeout=30)
    s.sendall(('POST /api/group/delete HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: esd_session=%s\r\n'
               'Content-Type: application/json\r\nX-CSRF-Token: %s\r\nContent-Length: %d\r\n\r\n'
               % (esd.http_port, admin.cookie, admin.csrf, len(body))).encode() + body)
    s.close()
    deadline = time.monotonic() + 30
    names = None
    while time.monotonic() < deadline:
        names = [x['name'] for x in esctl_json(esd, 'group', 'list')]
        if 'short-lived' not in names:
            break
        time.sleep(0.05)
    check(names == [ODD], 'a delete whose client closed at once is made all the same (%s)' % names)
    # the group changes are logged with the user, answered or not
    left = 'web consumer group change left unanswered: its client went' in esd.log_text()
    print('the client of the short-lived delete went %s it was answered' % ('before' if left else 'after'))
    st, _, _ = admin.get('/api/groups')
    check(st == 200, 'the console still answers')

    log = esd.log_text()
    check('web consumer group change' in log and 'user=alice change=delete group="orders"' in log
          and 'change=replay-parked group="orders" replayed=119' in log, 'group changes are logged with the user')
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly (status %s)' % rc)

# ---- a follower serves no consumer group (their state is not replicated):
# every call is 409 (port 1: nothing listens there, the follower keeps
# trying, which is all this needs)
esd = Esd(auth=True, args=['--follow-nats', 'nats://127.0.0.1:1'])
try:
    c = Client(esd)
    c.login(ADMIN)
    for path in ['/api/groups', '/api/group?name=orders', '/api/group/parked?name=orders']:
        st, j, _ = c.get(path)
        check(st == 409 and 'primary' in j['error'], 'follower: GET %s is 409 (%s)' % (path.split('?')[0], j))
    for path in ['/api/group/replay', '/api/group/delete']:
        st, j, _ = c.post(path, {'name': 'orders'})
        check(st == 409 and 'primary' in j['error'], 'follower: POST %s is 409' % path)
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly (status %s)' % rc)

# ---- 10,000 parked events: every page, in order
esd = Esd(auth=True)
try:
    esd.seed(10000)
    esd.esctl('group', 'create', 'big', '--prefix', 'load-', '--from-start')
    check(member(esd, 'big', 'park', 10000, 'too big') == 'parked 10000', '10,000 events parked')
    c = Client(esd)
    c.login(READER)
    seen, after, pages, times = [], 0, 0, []
    while True:
        t0 = time.monotonic()
        st, j, _ = c.get('/api/group/parked?name=big&limit=200&after=%d' % after)
        times.append(time.monotonic() - t0)
        if st != 200:
            break
        pages += 1
        seen += [x['position'] for x in j['events']]
        if not j['more']:
            break
        after = j['next_after']
    check(st == 200 and pages == 50 and len(seen) == 10000 and seen == sorted(set(seen))
          and all(x is not None for x in seen), '10,000 parked: 50 pages of 200, in order, none twice (%d)' % len(seen))
    t0 = time.monotonic()
    st, j, _ = c.get('/api/group/parked?name=big')
    first = time.monotonic() - t0
    t0 = time.monotonic()
    st2, j2, _ = c.get('/api/group/parked?name=big&after=%d' % seen[-51])
    last = time.monotonic() - t0
    check(st == 200 and st2 == 200 and len(j2['events']) == 50 and not j2['more'], 'the last page of 50')
    times.sort()
    print('figures: 10,000 parked; page of 50 first %.1f ms, last %.1f ms; pages of 200: median %.1f ms, max %.1f ms'
          % (first * 1000, last * 1000, times[len(times) // 2] * 1000, times[-1] * 1000))
    t0 = time.monotonic()
    st, j, _ = c.get('/api/groups')
    t1 = time.monotonic()
    c.get('/api/group?name=big')
    t2 = time.monotonic()
    print('figures: GET /api/groups %.1f ms, GET /api/group %.1f ms' % ((t1 - t0) * 1000, (t2 - t1) * 1000))
    check(st == 200 and j['groups'][0]['parked'] == 10000, 'the list says 10,000 parked')
finally:
    rc = esd.stop()
check(rc == 0, 'esd stopped cleanly (status %s)' % rc)
finish()
