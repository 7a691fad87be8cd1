"""Tokens and signing keys, worked on the catalog directly (like ``sites sync``)."""

from __future__ import annotations

import argparse
import getpass
import sys

from ..settings import Settings
from ._common import Groups, print_json, table


def _token_db(st: Settings):  # type: ignore[no-untyped-def]
    from dawms.catalog.db import Database

    db = Database(st.db_url)
    db.upgrade()
    return db


def cmd_token_issue(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server.tokens import TokenRequestError, issue, parse_duration

    try:
        lifetime = parse_duration(args.expires)
        db = _token_db(st)
        token, claims = issue(db, role=args.role, subject=args.subject,
                              queues=args.queue or [], lifetime_s=lifetime)
    except TokenRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json({"token": token, **claims})
    else:
        print(token)
        print(f"jti {claims['jti']} role {claims['role']} subject {claims['sub']} expires "
              f"{claims['exp']}", file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server.tokens import TokenRequestError, revoke

    try:
        new = revoke(_token_db(st), args.jti, actor=getpass.getuser(), reason=args.reason)
    except TokenRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"token {args.jti} revoked" if new else f"token {args.jti} was revoked already")
    return 0


def cmd_token_rotate(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    kid = keys.rotate(_token_db(st))
    print(f"new signing key {kid}; older keys verify until `dawms token retire-key KID`")
    return 0


def cmd_token_retire(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    if not keys.retire(_token_db(st), args.kid):
        print(f"error: no unretired key {args.kid[:64]!r}", file=sys.stderr)
        return 2
    print(f"key {args.kid} retired: tokens it signed are refused")
    return 0


def cmd_token_keys(args: argparse.Namespace, st: Settings) -> int:
    from dawms.server import keys

    rows = keys.list_keys(_token_db(st))
    if args.json:
        print_json(rows)
    else:
        table("signing keys", rows, ["kid", "algorithm", "created_at", "retired_at"])
    return 0


def cmd_token_hash_secret(args: argparse.Namespace, st: Settings) -> int:
    """Read a secret from stdin (never the command line) and print its scrypt hash."""
    from dawms.server.auth import hash_secret

    secret = (getpass.getpass("secret: ") if sys.stdin.isatty()
              else sys.stdin.readline()).rstrip("\n")
    if not 12 <= len(secret) <= 1024:
        print("error: a secret must be 12 to 1024 characters", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0



def register(groups: Groups) -> None:
    tok = groups("token", "tokens and signing keys (works on the catalog)")
    ti = tok.add_parser("issue", help="print a new signed token")
    ti.add_argument("--role", required=True,
                    help="admin, production, analyst, reader, pilot, factory or ddm")
    ti.add_argument("--subject", required=True, help="who the token speaks for")
    ti.add_argument("--queue", action="append",
                    help="a queue a pilot or factory token is bound to (repeat)")
    ti.add_argument("--expires", default="12h", help="lifetime: 30m, 12h, 7d (default 12h)")
    ti.add_argument("--json", action="store_true", help="the token and its claims as JSON")
    ti.set_defaults(fn=cmd_token_issue)
    tv = tok.add_parser("revoke", help="refuse a token from now on, by its jti")
    tv.add_argument("jti")
    tv.add_argument("--reason", default="")
    tv.set_defaults(fn=cmd_token_revoke)
    tok.add_parser("rotate-key", help="make a new signing key (old ones still verify)"
                   ).set_defaults(fn=cmd_token_rotate)
    tr_ = tok.add_parser("retire-key", help="stop accepting tokens signed by a key")
    tr_.add_argument("kid")
    tr_.set_defaults(fn=cmd_token_retire)
    tk_ = tok.add_parser("keys", help="list signing keys")
    tk_.add_argument("--json", action="store_true")
    tk_.set_defaults(fn=cmd_token_keys)
    tok.add_parser("hash-secret", help="hash a DDM Basic secret read from stdin, for "
                   "DAWMS_DDM_BASIC_USERS").set_defaults(fn=cmd_token_hash_secret)
