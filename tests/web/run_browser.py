"""Runs browser.mjs (puppeteer-core + Debian's chromium, headless) against a
real esd with 10,000 streams: starts and seeds esd, hands the addresses,
credentials and the screenshot folder to the script through its environment,
and stops esd. Two consumer groups are made with esctl, and a member
(tests/web/web_member) parks 60 events of one with a reason that is HTML,
another holds 3 in flight until the test ends. Exit 77 (skipped) when chromium, node or the npm packages
(`npm ci` in tests/web/, done by tools/dev.sh) are missing, unless
ESD_REQUIRE_BROWSER=1 (tools/dev.sh test sets it): then their absence fails."""
import os
import shutil
import subprocess
import sys

from webh import ADMIN, READER, WRITER, Esd

here = os.path.dirname(os.path.abspath(__file__))
chromium = shutil.which('chromium') or shutil.which('chromium-browser')
node = shutil.which('node')
if not chromium or not node or not os.path.isdir(os.path.join(here, 'node_modules', 'puppeteer-core')):
    print('needs chromium, node and `npm ci` in tests/web (tools/dev.sh does both)')
    sys.exit(1 if os.environ.get('ESD_REQUIRE_BROWSER') == '1' else 77)

shots = os.path.join(os.environ.get('WEB_ARTIFACTS', here), 'screenshots')
os.makedirs(shots, exist_ok=True)
GROUP = 'orders'
XSS_GROUP = '<img src=x onerror=alert(2)>'
XSS_REASON = 'card declined <script>alert(3)</script>'
esd = Esd(auth=True)
holder = None
rc = 1
try:
    needle, first_id = esd.seed(10000)
    esd.esctl('append', 'xss-1', 'Injected', '-', '--content-type', 'text/plain',
              data=b'<img src=x onerror=alert(1)>')
    esd.esctl('append', 'big-1', 'Big', '{"pad": "%s"}' % ('x' * 6000))
    for i in range(5):
        esd.esctl('append', 'retain-1', 'Kept', '{"n": %d}' % i)
    for name in ['doomed-1', 'doomed-2']:
        esd.esctl('append', name, 'Doomed', '{"n": 0}')
        esd.esctl('append', name, 'Doomed', '{"n": 1}')
    esd.esctl('group', 'create', GROUP, '--prefix', 'load-', '--from-start', '--ack-timeout-ms', '3600000')
    esd.esctl('group', 'create', XSS_GROUP, '--category', 'xss', '--from-start')
    parked = subprocess.run([os.environ['WEB_MEMBER_BIN'], esd.address, GROUP, 'park', '60', XSS_REASON],
                            capture_output=True, env=esd.env(ADMIN), timeout=120)
    if parked.returncode != 0:
        raise RuntimeError('web_member park: ' + parked.stderr.decode())
    holder = subprocess.Popen([os.environ['WEB_MEMBER_BIN'], esd.address, GROUP, 'hold', '3'],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=esd.env(READER))
    if holder.stdout.readline().decode().strip() != 'holding 3':
        raise RuntimeError('web_member hold did not start')
    env = dict(os.environ)
    env.update({'WEB_URL': esd.url, 'ES_ADDRESS': esd.address, 'CHROMIUM': chromium,
                'ADMIN_USER': ADMIN[0], 'ADMIN_TOKEN': ADMIN[1],
                'READER_USER': READER[0], 'READER_TOKEN': READER[1],
                'WRITER_USER': WRITER[0], 'WRITER_TOKEN': WRITER[1],
                'NEEDLE': needle, 'FIRST_ID': first_id, 'SHOTS': shots,
                'GROUP': GROUP, 'XSS_GROUP': XSS_GROUP, 'XSS_REASON': XSS_REASON})
    rc = subprocess.run([node, os.path.join(here, 'browser.mjs')], env=env).returncode
finally:
    if holder:
        holder.stdin.close()
        holder.wait(60)
    stopped = esd.stop()
if stopped != 0:
    print('esd exited with status %s' % stopped)
    rc = rc or 1
sys.exit(rc)
