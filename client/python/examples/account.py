#!/usr/bin/env python3
"""account.py — the bank-account example of esd in Python, interchangeable
with the C es-account: same commands, options, output (text and --json),
exit statuses, stream names, event types, payloads and snapshots, so an
account opened by one can be used by the other.

    account.py [-s HOST:PORT] [--json] [--snapshot-every N] COMMAND ARGS

    stream     account-<ID>, ID = 1..64 of [A-Za-z0-9_.-]
    events     AccountOpened  {"owner": "Alice"}
               MoneyDeposited {"amount": 500}
               MoneyWithdrawn {"amount": 200}
               (compact JSON, content type application/json; amounts are
               positive integers in minor units, at most 2**63-1)
    transfer   MoneyWithdrawn on FROM + MoneyDeposited on TO, appended in
               one transaction with both accounts' expectations
    snapshots  {"balance":N,"open":B,"owner":S} (sorted keys), format 1

Exit status: 0 done; 1 refused (or failed), with the reason on stderr;
2 usage error; 3 cannot connect to the server.
"""

import json
import os
import re
import sys
import time

try:
    import esd
except ImportError:  # run from the source tree: client/python beside examples/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import esd
from esd.aggregate import Aggregate, Refused, Repository

PREFIX = "account-"
ID_MAX = 64
OWNER_MAX = 200
INT64_MAX = (1 << 63) - 1
OPENED, DEPOSITED, WITHDRAWN = "AccountOpened", "MoneyDeposited", "MoneyWithdrawn"
JSON_TYPE = "application/json"
EXIT_DONE, EXIT_REFUSED, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def valid_id(s) -> bool:
    """1..64 characters of [A-Za-z0-9_.-]."""
    return isinstance(s, str) and _ID_RE.fullmatch(s) is not None


def valid_owner(s) -> bool:
    """1..200 bytes of UTF-8 without control characters (C0, C1, DEL)."""
    if not isinstance(s, str):
        return False
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if not 0 < len(b) <= OWNER_MAX:
        return False
    return all(not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in s)


def parse_amount(s):
    """A strict amount: digits, no sign, no leading zero, 1..2**63-1; or None."""
    if not isinstance(s, str) or not s or not s.isascii() or not s.isdigit() or s[0] == "0":
        return None
    v = int(s)
    return v if v <= INT64_MAX else None


def _payload(ev):
    try:
        o = json.loads(ev.data, object_pairs_hook=_no_duplicates)
    except ValueError:
        return None
    return o if isinstance(o, dict) else None


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def event_amount(ev):
    """The amount of a MoneyDeposited/MoneyWithdrawn event, or None."""
    if ev.type not in (DEPOSITED, WITHDRAWN):
        return None
    o = _payload(ev)
    v = o.get("amount") if o is not None else None
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= INT64_MAX else None


def _event(type_, key, value):
    data = json.dumps({key: value}, separators=(",", ":"), ensure_ascii=False)
    return esd.Event(type_, data, content_type=JSON_TYPE)


class Account(Aggregate):
    """The state of one account; apply() accepts exactly what the decisions emit."""

    state_format = 1

    def __init__(self):
        self.open = False
        self.owner = ""
        self.balance = 0

    def apply(self, ev) -> None:
        if ev.type == OPENED:
            o = _payload(ev)
            owner = o.get("owner") if o is not None else None
            if self.open or not valid_owner(owner):
                raise esd.MalformedError("not a valid AccountOpened")
            self.open, self.owner, self.balance = True, owner, 0
        elif ev.type == DEPOSITED:
            a = event_amount(ev)
            if not self.open or a is None or self.balance > INT64_MAX - a:
                raise esd.MalformedError("not a valid MoneyDeposited")
            self.balance += a
        elif ev.type == WITHDRAWN:
            a = event_amount(ev)
            if not self.open or a is None or a > self.balance:
                raise esd.MalformedError("not a valid MoneyWithdrawn")
            self.balance -= a
        else:
            raise esd.MalformedError(f"unknown event type {ev.type}")

    def encode(self) -> bytes:
        return json.dumps({"balance": self.balance, "open": self.open, "owner": self.owner},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

    def decode(self, data: bytes) -> None:
        o = json.loads(data, object_pairs_hook=_no_duplicates)
        if not isinstance(o, dict):
            raise ValueError("not an object")
        op, owner, bal = o.get("open"), o.get("owner"), o.get("balance")
        ok = (isinstance(op, bool) and isinstance(owner, str) and isinstance(bal, int)
              and not isinstance(bal, bool) and bal >= 0)
        if ok and op:
            ok = valid_owner(owner)
        elif ok:
            ok = bal == 0 and owner == ""
        if not ok:
            raise ValueError("not an account snapshot")
        self.open, self.owner, self.balance = op, owner, bal


# ------------------------------------------------------------ decisions --

def _check_withdraw(acc, id_, amount):
    if not acc.open:
        raise Refused("not_open", f"account {id_} is not open")
    if amount > acc.balance:
        raise Refused("insufficient_funds", f"insufficient funds: account {id_} has "
                      f"{acc.balance}, cannot withdraw {amount}")


def _check_deposit(acc, id_, amount):
    if not acc.open:
        raise Refused("not_open", f"account {id_} is not open")
    if acc.balance > INT64_MAX - amount:
        raise Refused("overflow", f"a deposit of {amount} would overflow the balance of account "
                      f"{id_} ({acc.balance}; at most {INT64_MAX})")


def decide_open(id_, owner):
    """The decision of open."""
    def decide(acc):
        if acc.open:
            raise Refused("already_open", f"account {id_} is already open (owner {acc.owner})")
        if not valid_owner(owner):
            raise Refused("bad_owner", f"the owner must be 1..{OWNER_MAX} bytes of UTF-8 "
                          "without control characters")
        return [_event(OPENED, "owner", owner)]
    return decide


def decide_deposit(id_, amount):
    """The decision of deposit."""
    def decide(acc):
        _check_deposit(acc, id_, amount)
        return [_event(DEPOSITED, "amount", amount)]
    return decide


def decide_withdraw(id_, amount):
    """The decision of withdraw (no overdraft)."""
    def decide(acc):
        _check_withdraw(acc, id_, amount)
        return [_event(WITHDRAWN, "amount", amount)]
    return decide


def decide_same_account(id_):
    """The decision of a transfer from an account to itself: refused."""
    def decide(acc):
        raise Refused("same_account", f"cannot transfer from account {id_} to itself")
    return decide


def decide_transfer(frm, to, amount):
    """The decision of a transfer over (FROM, TO)."""
    def decide(a, b):
        _check_withdraw(a, frm, amount)
        _check_deposit(b, to, amount)
        return [[_event(WITHDRAWN, "amount", amount)], [_event(DEPOSITED, "amount", amount)]]
    return decide


# ------------------------------------------------------------------ CLI --

def _dump(o, f):
    f.write(json.dumps(o, separators=(",", ":"), ensure_ascii=False) + "\n")


class Cli:
    """The parsed command line."""

    def __init__(self):
        self.server = None
        self.user = None
        self.token_file = None
        self.tls = False
        self.tls_insecure = False
        self.tls_ca = None
        self.tls_server_name = None
        self.json = False
        self.help = False
        self.snapshot_every = 100
        self.owner = None
        self.cmd = None
        self.pos = []


COMMANDS = {
    "open": ("ID --owner NAME", 1, "open an account",
             "Open account ID for NAME (AccountOpened). Refused when it is already open.\n"),
    "deposit": ("ID AMOUNT", 2, "deposit into an account",
                "Deposit AMOUNT (a positive integer, in minor units) into account ID\n"
                "(MoneyDeposited). Refused when the account is not open or the balance would\n"
                "overflow.\n"),
    "withdraw": ("ID AMOUNT", 2, "withdraw from an account (no overdraft)",
                 "Withdraw AMOUNT from account ID (MoneyWithdrawn). Refused when the account is\n"
                 "not open or has less than AMOUNT (no overdraft).\n"),
    "transfer": ("FROM TO AMOUNT", 3, "move money between accounts, atomically",
                 "Move AMOUNT from account FROM to account TO: MoneyWithdrawn on FROM and\n"
                 "MoneyDeposited on TO, appended in one transaction that expects both accounts\n"
                 "at the revisions the decision was made on (retried on a concurrent change).\n"
                 "Refused when either is not open, FROM has less than AMOUNT, TO would\n"
                 "overflow, or FROM is TO.\n"),
    "balance": ("ID", 1, "balance, revision, events replayed",
                "The balance of account ID, rebuilt by replaying its events (after its latest\n"
                "snapshot when there is one): prints the balance, the revision it reflects and\n"
                "how many events were replayed. --json: {\"id\",\"owner\",\"balance\","
                "\"revision\",\n\"replayed\"}.\n"),
    "history": ("ID", 1, "events with the running balance",
                "Every event of account ID with the running balance (a full replay).\n"),
    "snapshot": ("ID", 1, "save a snapshot now",
                 "Save a snapshot of account ID now (they are also saved every\n"
                 "--snapshot-every events by the commands that write).\n"),
}

GLOBAL_HELP = (
    "Options (anywhere on the line):\n"
    "  -s, --server HOST:PORT  the server (default $ES_SERVER, else 127.0.0.1:7400)\n"
    "      --user NAME         user for the hello (default $ES_USER)\n"
    "      --token-file FILE   token for the hello (default $ES_TOKEN_FILE, else the\n"
    "                          token in $ES_TOKEN)\n"
    "      --tls               TLS, verifying the server against the system's CAs\n"
    "                          (default: on when $ES_TLS is 1)\n"
    "      --tls-ca FILE       TLS, verifying the server against the CAs in FILE\n"
    "                          (default $ES_TLS_CA)\n"
    "      --tls-server-name N the name the server's certificate must carry\n"
    "      --tls-insecure      TLS without verifying the server (tests only)\n"
    "      --json              results as one JSON object per line, errors as JSON on stderr\n"
    "      --snapshot-every N  save a snapshot once N events follow the last one\n"
    "                          (default 100; 0: never automatically)\n"
    "  -h, --help              help\n"
    "\n"
    "Exit status: 0 done, 1 refused or failed (reason on stderr), 2 usage error,\n"
    "3 cannot connect.\n")

PROG = "account.py"


def usage_main(f):
    f.write(f"usage: {PROG} [-s HOST:PORT] [--json] COMMAND ARGS\n\n"
            "The bank-account example of esd: each account is the stream account-ID,\n"
            "rebuilt from its events; a transfer is one transaction over two streams.\n\n"
            "Commands:\n")
    for name, (args, _, summary, _) in COMMANDS.items():
        f.write(f"  {name + ' ' + args:<26} {summary}\n")
    f.write(f"  {'help [COMMAND]':<26} help on a command\n\n")
    f.write(f"IDs: 1..{ID_MAX} characters of A-Z a-z 0-9 _ . -; amounts: positive integers in\n"
            f"minor units (1..9223372036854775807).\n\n{GLOBAL_HELP}")


def usage_error(cmd, msg):
    sys.stderr.write(f"{PROG}: {msg}\n")
    if cmd is not None:
        sys.stderr.write(f"usage: {PROG} {cmd} {COMMANDS[cmd][0]}\n")
    sys.stderr.write(f"({PROG} --help for more)\n")
    return EXIT_USAGE


_VALUED = {"--server": "HOST:PORT", "-s": "HOST:PORT", "--user": "a NAME",
           "--token-file": "a FILE", "--owner": "a NAME", "--snapshot-every": "a number",
           "--tls-ca": "a FILE", "--tls-server-name": "a NAME"}


def parse(argv, x):
    """Parse argv into x; returns None to go on, or an exit status."""
    only_pos = False
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        is_opt = not only_pos and len(a) > 1 and a[0] == "-" and not a[1].isdigit()
        if not is_opt:
            if x.cmd is None:
                x.cmd = a
            else:
                x.pos.append(a)
            continue
        if a == "--":
            only_pos = True
            continue
        if a in ("-h", "--help"):
            x.help = True
            continue
        if a == "--json":
            x.json = True
            continue
        if a == "--tls":
            x.tls = True
            continue
        if a == "--tls-insecure":
            x.tls_insecure = True
            continue
        name, value = a, None
        if "=" in a and a.startswith("--"):
            name, value = a.split("=", 1)
        if name not in _VALUED:
            return usage_error(None, f"unknown option {a}")
        if value is None:
            if i >= len(argv):
                return usage_error(None, f"{a} needs {_VALUED[name]}")
            value = argv[i]
            i += 1
        if name in ("--server", "-s"):
            x.server = value
        elif name == "--user":
            x.user = value
        elif name == "--token-file":
            x.token_file = value
        elif name == "--owner":
            x.owner = value
        elif name == "--tls-ca":
            x.tls_ca = value
        elif name == "--tls-server-name":
            x.tls_server_name = value
        else:
            n = 0 if value == "0" else parse_amount(value)
            if n is None or n > 0xFFFFFFFF:
                return usage_error(None,
                                   f"--snapshot-every wants 0..4294967295, not \"{value}\"")
            x.snapshot_every = n
    if x.cmd is None:
        if x.help:
            usage_main(sys.stdout)
            return EXIT_DONE
        usage_main(sys.stderr)
        return EXIT_USAGE
    if x.cmd == "help":
        if not x.pos:
            usage_main(sys.stdout)
            return EXIT_DONE
        if x.pos[0] not in COMMANDS:
            return usage_error(None, f"no command \"{x.pos[0]}\"")
        c = COMMANDS[x.pos[0]]
        sys.stdout.write(f"usage: {PROG} {x.pos[0]} {c[0]}\n\n{c[3]}\n{GLOBAL_HELP}")
        return EXIT_DONE
    if x.cmd not in COMMANDS:
        return usage_error(None, f"unknown command \"{x.cmd}\"")
    args, npos, _, text = COMMANDS[x.cmd]
    if x.help:
        sys.stdout.write(f"usage: {PROG} {x.cmd} {args}\n\n{text}\n{GLOBAL_HELP}")
        return EXIT_DONE
    if len(x.pos) > npos:
        return usage_error(x.cmd, f"unexpected argument \"{x.pos[npos]}\"")
    if len(x.pos) < npos:
        return usage_error(x.cmd, "missing argument")
    if x.owner is not None and x.cmd != "open":
        return usage_error(x.cmd, "--owner is an option of open only")
    ids = 2 if x.cmd == "transfer" else 1
    for k in range(ids):
        if not valid_id(x.pos[k]):
            return usage_error(x.cmd, f"bad account id \"{x.pos[k]}\" (1..64 of A-Z a-z 0-9 _ . -)")
    if npos > ids and parse_amount(x.pos[npos - 1]) is None:
        return usage_error(x.cmd, f"bad amount \"{x.pos[npos - 1]}\": a positive integer in "
                           "minor units (1..9223372036854775807)")
    if x.cmd == "open":
        if x.owner is None:
            return usage_error(x.cmd, "open needs --owner NAME")
        if not valid_owner(x.owner):
            return usage_error(x.cmd, f"bad owner \"{x.owner}\": 1..200 bytes of UTF-8 without "
                               "control characters")
    return None


def report(x, exc, what):
    """A refusal or a failed operation: exit 1."""
    msg = exc.message if isinstance(exc, esd.EsdError) else str(exc)
    if x.json:
        if isinstance(exc, Refused):
            _dump({"error": "refused", "reason": exc.reason, "message": msg}, sys.stderr)
        else:
            _dump({"error": exc.name, "message": msg}, sys.stderr)
    elif isinstance(exc, Refused):
        sys.stderr.write(f"{PROG}: refused: {msg}\n")
    else:
        sys.stderr.write(f"{PROG}: {what} failed: {msg} ({exc.name})\n")
    return EXIT_REFUSED


def refuse_not_open(x, id_):
    """The refusal of a read-only command on an account that is not open."""
    msg = f"account {id_} is not open"
    if x.json:
        _dump({"error": "refused", "reason": "not_open", "message": msg}, sys.stderr)
    else:
        sys.stderr.write(f"{PROG}: refused: {msg}\n")
    return EXIT_REFUSED


def format_time(us):
    """'2024-05-01T12:00:00.123456Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1000000)) + \
        f".{us % 1000000:06d}Z"


def cmd_open(x, repo):
    id_ = x.pos[0]
    try:
        res = repo.execute(PREFIX + id_, decide_open(id_, x.owner))
    except esd.EsdError as e:
        return report(x, e, "open")
    acc = res.loaded[0].aggregate
    if x.json:
        _dump({"id": id_, "owner": acc.owner, "balance": acc.balance, "revision": res.revision},
              sys.stdout)
    else:
        print(f"opened account {id_} for {acc.owner} (revision {res.revision})")
    return EXIT_DONE


def cmd_deposit_withdraw(x, repo, dep):
    id_, amount = x.pos[0], parse_amount(x.pos[1])
    decide = decide_deposit(id_, amount) if dep else decide_withdraw(id_, amount)
    try:
        res = repo.execute(PREFIX + id_, decide)
    except esd.EsdError as e:
        return report(x, e, "deposit" if dep else "withdraw")
    acc = res.loaded[0].aggregate
    if x.json:
        _dump({"id": id_, "amount": amount, "balance": acc.balance, "revision": res.revision},
              sys.stdout)
    else:
        print(f"{'deposited' if dep else 'withdrew'} {amount} {'to' if dep else 'from'} account "
              f"{id_}: balance {acc.balance} (revision {res.revision})")
    return EXIT_DONE


def cmd_transfer(x, repo):
    frm, to, amount = x.pos[0], x.pos[1], parse_amount(x.pos[2])
    try:
        if frm == to:
            # One stream cannot take two appends of one transaction: the
            # account's own decision refuses it (as es-account does).
            repo.execute(PREFIX + frm, decide_same_account(frm))
        res = repo.execute_many([PREFIX + frm, PREFIX + to], decide_transfer(frm, to, amount))
    except esd.EsdError as e:
        return report(x, e, "transfer")
    fa, ta = res.loaded
    if x.json:
        _dump({"from": frm, "to": to, "amount": amount, "from_balance": fa.aggregate.balance,
               "to_balance": ta.aggregate.balance, "from_revision": fa.revision,
               "to_revision": ta.revision}, sys.stdout)
    else:
        print(f"transferred {amount} from account {frm} to account {to}")
        print(f"  {frm}: balance {fa.aggregate.balance} (revision {fa.revision})")
        print(f"  {to}: balance {ta.aggregate.balance} (revision {ta.revision})")
    return EXIT_DONE


def cmd_balance(x, repo):
    id_ = x.pos[0]
    try:
        ld = repo.load(PREFIX + id_)
    except esd.EsdError as e:
        return report(x, e, "balance")
    acc = ld.aggregate
    if not acc.open:
        return refuse_not_open(x, id_)
    if x.json:
        _dump({"id": id_, "owner": acc.owner, "balance": acc.balance, "revision": ld.revision,
               "replayed": ld.replayed}, sys.stdout)
    else:
        line = (f"account {id_} (owner {acc.owner}): balance {acc.balance}, revision "
                f"{ld.revision}, replayed {ld.replayed} event{'' if ld.replayed == 1 else 's'}")
        if ld.from_snapshot:
            line += f" after the snapshot at revision {ld.snapshot_revision}"
        elif ld.snapshot_ignored:
            line += " (a snapshot of another format was ignored)"
        print(line)
    return EXIT_DONE


def cmd_history(x, repo):
    id_ = x.pos[0]
    stream = PREFIX + id_
    acc = Account()
    n = 0
    try:
        for ev in repo.client.read_stream(stream):
            try:
                acc.apply(ev)
            except esd.MalformedError:
                sys.stderr.write(f"{PROG}: {stream} revision {ev.revision} ({ev.type}) is not "
                                 "a valid account event\n")
                return EXIT_REFUSED
            when = format_time(ev.recorded_at_us)
            amount = event_amount(ev)
            if x.json:
                o = {"revision": ev.revision, "position": ev.position, "type": ev.type}
                if amount is not None:
                    o["amount"] = amount
                else:
                    o["owner"] = acc.owner
                o["balance"] = acc.balance
                o["recorded_at"] = when
                _dump(o, sys.stdout)
            else:
                if n == 0:
                    print(f"{'REVISION':<8} {'TYPE':<15} {'AMOUNT':>14} {'BALANCE':>14}  "
                          "RECORDED AT")
                amt = "-" if amount is None else \
                    f"{'-' if ev.type == WITHDRAWN else '+'}{amount}"
                line = f"{ev.revision:<8} {ev.type:<15} {amt:>14} {acc.balance:>14}  {when}"
                if amount is None:
                    line += f"  owner {acc.owner}"
                print(line)
            n += 1
    except esd.NotFoundError:
        return refuse_not_open(x, id_)
    except esd.EsdError as e:
        if x.json:
            _dump({"error": e.name, "message": e.message}, sys.stderr)
        else:
            sys.stderr.write(f"{PROG}: history failed: {e.message} ({e.name})\n")
        return EXIT_REFUSED
    return EXIT_DONE


def cmd_snapshot(x, repo):
    id_ = x.pos[0]
    try:
        rev, saved = repo.snapshot(PREFIX + id_)
    except esd.NotFoundError:
        return refuse_not_open(x, id_)
    except esd.EsdError as e:
        return report(x, e, "snapshot")
    if x.json:
        _dump({"id": id_, "revision": rev, "saved": saved}, sys.stdout)
    elif saved:
        print(f"snapshot of account {id_} saved at revision {rev}")
    else:
        print(f"snapshot of account {id_} already current at revision {rev}")
    return EXIT_DONE


RUN = {"open": cmd_open, "deposit": lambda x, r: cmd_deposit_withdraw(x, r, True),
       "withdraw": lambda x, r: cmd_deposit_withdraw(x, r, False), "transfer": cmd_transfer,
       "balance": cmd_balance, "history": cmd_history, "snapshot": cmd_snapshot}


def main(argv=None) -> int:
    """The command line; returns the exit status."""
    x = Cli()
    rc = parse(sys.argv[1:] if argv is None else argv, x)
    if rc is not None:
        return rc
    server = x.server or os.environ.get("ES_SERVER") or esd.DEFAULT_ADDRESS
    ca = x.tls_ca or os.environ.get("ES_TLS_CA") or None
    tls = x.tls or x.tls_insecure or ca is not None or os.environ.get("ES_TLS") == "1"
    if x.tls_insecure:
        sys.stderr.write(f"{PROG}: warning: --tls-insecure: the server's certificate is not "
                         "verified; anyone on the path can impersonate it\n")
    token_file = x.token_file or os.environ.get("ES_TOKEN_FILE") or None
    token = None if token_file else (os.environ.get("ES_TOKEN") or None)
    try:
        client = esd.Client(server, client_name="es-account", user=x.user or
                            os.environ.get("ES_USER"), token=token, token_file=token_file,
                            tls=tls, tls_ca_file=ca, tls_server_name=x.tls_server_name,
                            tls_insecure=x.tls_insecure, connect_timeout=3.0,
                            reconnect_attempts=2, breaker_threshold=0)
    except esd.EsdError as e:
        return usage_error(None, e.message if token_file else f"bad server address \"{server}\"")
    try:
        client.connect()
    except esd.EsdError as e:
        if x.json:
            _dump({"error": e.name, "server": server, "message": e.message}, sys.stderr)
        else:
            sys.stderr.write(f"{PROG}: {e.message}\n")
        return EXIT_CONNECT
    with client:
        repo = Repository(client, Account, snapshot_every=x.snapshot_every)
        return RUN[x.cmd](x, repo)


if __name__ == "__main__":
    sys.exit(main())
