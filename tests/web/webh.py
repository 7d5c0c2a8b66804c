"""webh — what the web console's tests share (Python 3 standard library only).

Starts the real esd (ESD_BIN) in a temporary directory with the TCP port and
the web console on port 0, learns both ports (the port file, and the log line
"web console listening addr=HOST:PORT"), and talks HTTP to the console with a
cookie-keeping client. Every wait polls with a deadline; nothing sleeps to
synchronise.
"""
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

ADMIN = ('alice', 'alice-token-0123456789')
READER = ('bob', 'bob-token-0123456789')
WRITER = ('carol', 'carol-token-0123456789')


class Esd:
    def __init__(self, auth=True, args=(), tls=False):
        self.dir = tempfile.mkdtemp(prefix='esd-web-')
        self.tls = tls
        args = list(args)
        if tls:
            cert, key = os.path.join(self.dir, 'cert.pem'), os.path.join(self.dir, 'key.pem')
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
                            '-out', cert, '-subj', '/CN=localhost', '-days', '2'],
                           check=True, capture_output=True)
            args += ['--tls-cert', cert, '--tls-key', key]
        self.log_path = os.path.join(self.dir, 'esd.log')
        port_file = os.path.join(self.dir, 'port')
        cmd = [os.environ['ESD_BIN'], '--data-dir', os.path.join(self.dir, 'data'),
               '--listen', '127.0.0.1:0', '--port-file', port_file,
               '--http-listen', '127.0.0.1:0', '--sync', 'none'] + list(args)
        if auth:
            users = os.path.join(self.dir, 'users')
            fd = os.open(users, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, 'w') as f:
                f.write('%s admin %s\n%s read %s\n%s write %s\n' % (ADMIN + READER + WRITER))
            cmd += ['--auth-file', users]
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        self.port = self.http_port = None
        while time.monotonic() < deadline and (self.port is None or self.http_port is None):
            if self.proc.poll() is not None:
                raise RuntimeError('esd exited: ' + open(self.log_path).read())
            if os.path.exists(port_file):
                txt = open(port_file).read().strip()
                self.port = int(txt) if txt else None
            for line in open(self.log_path):
                if 'web console listening' in line:
                    addr = line.split('addr=')[1].split()[0]
                    self.http_port = int(addr.rsplit(':', 1)[1])
            time.sleep(0.02)
        if self.port is None or self.http_port is None:
            raise RuntimeError('esd did not start: ' + open(self.log_path).read())
        self.address = '127.0.0.1:%d' % self.port
        self.url = '%s://127.0.0.1:%d' % ('https' if tls else 'http', self.http_port)

    def env(self, who=ADMIN):
        e = dict(os.environ)
        e['ES_USER'], e['ES_TOKEN'] = who
        return e

    def esctl(self, *args, who=ADMIN, data=None):
        out = subprocess.run([os.environ['ESCTL_BIN'], '-s', self.address] + list(args),
                             input=data, capture_output=True, env=self.env(who), check=True)
        return out.stdout.decode()

    def seed(self, streams, who=ADMIN):
        out = subprocess.run([os.environ['WEB_SEED_BIN'], self.address, str(streams)],
                             capture_output=True, env=self.env(who), check=True)
        name, first_id = out.stdout.decode().split()
        return name, first_id

    def log_text(self):
        return open(self.log_path).read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        rc = self.proc.returncode
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class Client:
    """One browser-like HTTP client: keeps the session cookie and the CSRF token."""

    def __init__(self, esd):
        self.esd = esd
        self.cookie = None
        self.csrf = None
        self.conn = self.connect()

    def connect(self):
        if self.esd.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection('127.0.0.1', self.esd.http_port, timeout=30, context=ctx)
        return http.client.HTTPConnection('127.0.0.1', self.esd.http_port, timeout=30)

    def request(self, method, path, body=None, headers=None, raw_body=None):
        h = {}
        if self.cookie:
            h['Cookie'] = 'esd_session=' + self.cookie
        if body is not None:
            raw_body = json.dumps(body).encode()
            h['Content-Type'] = 'application/json'
            if self.csrf:
                h['X-CSRF-Token'] = self.csrf
        h.update(headers or {})
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=raw_body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = self.connect()
        for k, v in r.getheaders():
            if k.lower() == 'set-cookie' and v.startswith('esd_session='):
                val = v.split(';')[0].split('=', 1)[1]
                self.cookie = val or None
        ctype = r.getheader('Content-Type', '')
        parsed = json.loads(data) if ctype.startswith('application/json') and data else data
        return r.status, parsed, r

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def post(self, path, body, **kw):
        return self.request('POST', path, body=body, **kw)

    def login(self, who):
        st, j, _ = self.post('/api/login', {'user': who[0], 'token': who[1]})
        if st != 200:
            raise AssertionError('login as %s: %s %s' % (who[0], st, j))
        self.csrf = j['csrf']
        return j

    def close(self):
        self.conn.close()


failures = []


def check(cond, what):
    if cond:
        print('ok   ' + what)
    else:
        print('FAIL ' + what)
        failures.append(what)


def finish():
    if failures:
        print('%d check(s) failed' % len(failures))
        sys.exit(1)
    print('all checks passed')
