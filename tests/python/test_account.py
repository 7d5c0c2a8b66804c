"""The Python account example and the C es-account on the same accounts:
alternating commands, snapshots written by one and read by the other,
parallel transfers from both (the total is conserved, nobody overdraws,
both report the same balances), and the command line's contract."""

import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest

import harness

import esd

sys.path.insert(0, os.path.join(harness.PKG, "examples"))
import account  # noqa: E402


class Interop(harness.EsdTestCase):

    def stream(self, name="a"):
        """An account id unique to this run (ids are at most 64 characters)."""
        return f"{name}{time.monotonic_ns()}"

    def run_tool(self, which, *args, check=True, as_json=True):
        if which == "c":
            cmd = [harness.ES_ACCOUNT_BIN]
        else:
            cmd = [sys.executable, harness.ACCOUNT_PY]
        p = subprocess.run(cmd + ["-s", self.server.address] + (["--json"] if as_json else [])
                           + list(args),
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            self.fail(f"{which} {args}: exit {p.returncode}: {p.stderr}")
        return p

    def out(self, which, *args):
        return json.loads(self.run_tool(which, *args).stdout)

    def test_alternating_commands_and_identical_output(self):
        a, b = self.stream("a"), self.stream("b")
        self.assertEqual(self.out("c", "open", a, "--owner", "Alice"),
                         {"id": a, "owner": "Alice", "balance": 0, "revision": 0})
        self.assertEqual(self.out("py", "deposit", a, "500"),
                         {"id": a, "amount": 500, "balance": 500, "revision": 1})
        self.assertEqual(self.out("c", "withdraw", a, "120")["balance"], 380)
        self.assertEqual(self.out("py", "open", b, "--owner", "Bøb")["owner"], "Bøb")
        self.assertEqual(self.out("py", "transfer", a, b, "80"),
                         {"from": a, "to": b, "amount": 80, "from_balance": 300,
                          "to_balance": 80, "from_revision": 3, "to_revision": 1})
        self.assertEqual(self.out("c", "transfer", b, a, "30")["to_balance"], 330)
        for acc in (a, b):
            for as_json in (True, False):
                self.assertEqual(self.run_tool("c", "balance", acc, as_json=as_json).stdout,
                                 self.run_tool("py", "balance", acc, as_json=as_json).stdout)
            self.assertEqual(self.run_tool("c", "history", acc, as_json=False).stdout,
                             self.run_tool("py", "history", acc, as_json=False).stdout)
            self.assertEqual(self.run_tool("c", "history", acc).stdout,
                             self.run_tool("py", "history", acc).stdout)
        # Refusals: the same JSON on stderr and exit 1 from both.
        for args in (("withdraw", a, "100000"), ("open", a, "--owner", "Eve"),
                     ("deposit", self.stream("nobody"), "1"), ("transfer", a, a, "1"),
                     ("balance", self.stream("nobody")), ("history", self.stream("nobody")),
                     ("snapshot", self.stream("nobody"))):
            with self.subTest(args=args):
                pc = self.run_tool("c", *args, check=False)
                pp = self.run_tool("py", *args, check=False)
                self.assertEqual((pc.returncode, pp.returncode), (1, 1))
                self.assertEqual(json.loads(pc.stderr), json.loads(pp.stderr))

    def test_snapshots_cross_over(self):
        a = self.stream("snap")
        self.out("py", "open", a, "--owner", "Ann")
        for i in range(5):
            self.out("c" if i % 2 else "py", "deposit", a, str(10 + i), "--snapshot-every", "4")
        bal = self.out("c", "balance", a)
        self.assertEqual(bal["balance"], 60)
        self.assertLess(bal["replayed"], 6)  # started from a snapshot
        self.assertEqual(self.out("py", "snapshot", a), {"id": a, "revision": 5, "saved": True})
        self.assertEqual(self.out("c", "balance", a)["replayed"], 0)
        self.assertEqual(self.out("c", "snapshot", a)["saved"], False)
        self.out("c", "withdraw", a, "7")
        self.out("c", "snapshot", a)
        self.assertEqual(self.out("py", "balance", a),
                         {"id": a, "owner": "Ann", "balance": 53, "revision": 6,
                          "replayed": 0})
        text = self.run_tool("py", "balance", a, as_json=False).stdout
        self.assertEqual(text, self.run_tool("c", "balance", a, as_json=False).stdout)
        self.assertIn("after the snapshot at revision 6", text)

    def test_parallel_transfers_from_both(self):
        ids = [self.stream(f"p{i}") for i in range(4)]
        for i, acc in enumerate(ids):
            self.out("c" if i % 2 else "py", "open", acc, "--owner", f"Owner {i}")
            self.out("py" if i % 2 else "c", "deposit", acc, "1000")
        errors = []

        def worker(which, seed, n):
            rnd = random.Random(seed)
            for _ in range(n):
                frm, to = rnd.sample(ids, 2)
                p = self.run_tool(which, "transfer", frm, to, str(rnd.randint(1, 400)),
                                  "--snapshot-every", "5", check=False)
                if p.returncode == 1 and '"insufficient_funds"' in p.stderr:
                    continue
                if p.returncode != 0:
                    errors.append((which, p.returncode, p.stderr))

        def in_process(seed, n):
            rnd = random.Random(seed)
            with esd.Client(self.server.address) as c:
                repo = account.Repository(c, account.Account, snapshot_every=4)
                for _ in range(n):
                    frm, to = rnd.sample(ids, 2)
                    amount = rnd.randint(1, 400)
                    try:
                        repo.execute_many([account.PREFIX + frm, account.PREFIX + to],
                                          account.decide_transfer(frm, to, amount))
                    except account.Refused as e:
                        if e.reason != "insufficient_funds":
                            errors.append(("inproc", e))
        threads = [threading.Thread(target=worker, args=("c", 1, 8)),
                   threading.Thread(target=worker, args=("py", 2, 8)),
                   threading.Thread(target=worker, args=("c", 3, 8)),
                   threading.Thread(target=in_process, args=(4, 60)),
                   threading.Thread(target=in_process, args=(5, 60))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        total_c = total_py = 0
        for acc in ids:
            bc, bp = self.out("c", "balance", acc), self.out("py", "balance", acc)
            self.assertEqual(bc["balance"], bp["balance"])
            self.assertEqual(bc["revision"], bp["revision"])
            self.assertGreaterEqual(bc["balance"], 0)
            total_c += bc["balance"]
            total_py += bp["balance"]
            self.assertEqual(self.run_tool("c", "history", acc).stdout,
                             self.run_tool("py", "history", acc).stdout)
        self.assertEqual((total_c, total_py), (4000, 4000))


class CommandLine(unittest.TestCase):

    def run_py(self, *args, env=None):
        return subprocess.run([sys.executable, harness.ACCOUNT_PY, *args], capture_output=True,
                              text=True, timeout=60, env=env)

    def test_usage_errors_exit_2(self):
        for args in (("withdraw", "a", "-3"), ("withdraw", "a", "01"), ("deposit", "a", "1.5"),
                     ("deposit", "a", "9223372036854775808"), ("open", "a"),
                     ("open", "bad id", "--owner", "x"), ("open", "a", "--owner", "x\x01"),
                     ("deposit", "a"), ("deposit", "a", "1", "2"), ("frobnicate",),
                     ("balance", "a", "--owner", "x"), ("--bogus",), ("help", "nothing"),
                     ("balance", "a", "--snapshot-every", "x"), ("balance", "a", "--server"),
                     ()):
            with self.subTest(args=args):
                p = self.run_py(*args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertTrue("usage" in p.stderr or "--help for more" in p.stderr, p.stderr)
        with_c = subprocess.run([harness.ES_ACCOUNT_BIN, "withdraw", "a", "-3"],
                                capture_output=True, text=True)
        self.assertEqual(with_c.returncode, 2)

    def test_help_exit_0(self):
        for args in (("--help",), ("help",), ("help", "transfer"), ("transfer", "--help")):
            with self.subTest(args=args):
                p = self.run_py(*args)
                self.assertEqual(p.returncode, 0)
                self.assertIn("usage:", p.stdout)

    def test_cannot_connect_exit_3(self):
        env = dict(os.environ, ES_SERVER="127.0.0.1:1")
        p = self.run_py("balance", "a", "--json", env=env)
        self.assertEqual(p.returncode, 3)
        self.assertEqual(json.loads(p.stderr)["error"], "CONNECTION")
        p = self.run_py("balance", "a", "--token-file", "/nonexistent/token")
        self.assertEqual(p.returncode, 2)

    def test_domain_rules(self):
        self.assertEqual(account.parse_amount("42"), 42)
        for bad in ("0", "-1", "+1", " 1", "01", "1.5", "", "٣", "9223372036854775808"):
            self.assertIsNone(account.parse_amount(bad), bad)
        self.assertTrue(account.valid_owner("Zoë"))
        for bad in ("", "x" * 201, "a\x7f", "a\u0085", 3, "\ud800"):
            self.assertFalse(account.valid_owner(bad), repr(bad))
        acc = account.Account()
        with self.assertRaises(ValueError):
            acc.decode(b'{"open":false,"owner":"x","balance":0}')
        with self.assertRaises(ValueError):
            acc.decode(b'[1]')
        with self.assertRaises(ValueError):
            acc.decode(b'{"open":true,"open":true,"owner":"x","balance":0}')
        acc.decode(b'{"balance":5,"open":true,"owner":"x"}')
        self.assertEqual(acc.encode(), b'{"balance":5,"open":true,"owner":"x"}')
        over = account.Account()
        over.open, over.balance = True, account.INT64_MAX
        with self.assertRaises(account.Refused) as cm:
            account.decide_deposit("a", 1)(over)
        self.assertEqual(cm.exception.reason, "overflow")
        with self.assertRaises(account.Refused) as cm:
            account.decide_open("a", "")(account.Account())
        self.assertEqual(cm.exception.reason, "bad_owner")


if __name__ == "__main__":
    unittest.main()
