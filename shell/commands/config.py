"""The client config file: show what is in force and from where, set and unset keys,
print its path. It is written whole to a temporary file of mode 0600 in the same
directory and renamed over the old one, so it is never readable by others, not even
for a moment, and never half written."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from ..settings import KEYS, Settings, check_file, check_server, check_token, config_path
from ._common import Groups, fields, print_json


def _read(path: Path) -> dict[str, Any]:
    check_file(path, warn=False)  # Settings.from_env has warned already
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def _toml(data: dict[str, Any]) -> str:
    # every value is a string; a JSON string is a valid TOML basic string
    return "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in sorted(data.items()))


def write_config(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            f.write(_toml(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mask(key: str, value: Any) -> Any:
    if key == "token" and value:
        return f"{str(value)[:10]}... ({len(str(value))} characters)"
    return value


def _source(key: str, args: argparse.Namespace, in_file: dict[str, Any]) -> str:
    if key in ("server", "token") and getattr(args, f"flag_{key}", None):
        return "flag"
    if os.environ.get(f"DAWMS_{key.upper()}"):
        return f"$DAWMS_{key.upper()}"
    return str(config_path()) if key in in_file else "default"


def cmd_config_show(args: argparse.Namespace, st: Settings) -> int:
    path = config_path()
    try:
        in_file = _read(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [{"key": k, "value": _mask(k, getattr(st, k)), "from": _source(k, args, in_file)}
            for k in KEYS]
    if args.json:
        print_json({"path": str(path), "exists": path.exists(),
                    "settings": {r["key"]: {"value": r["value"], "from": r["from"]}
                                 for r in rows}})
        return 0
    print(f"config file: {path}" + ("" if path.exists() else " (not written yet)"))
    fields((r["key"], f"{r['value'] if r['value'] is not None else '-'}   [{r['from']}]")
           for r in rows)
    return 0


def cmd_config_set(args: argparse.Namespace, st: Settings | None) -> int:
    path = config_path()
    value = sys.stdin.readline().strip() if args.value == "-" else args.value
    try:
        if args.key == "server":
            value = check_server(value)
        elif args.key == "token":
            value = check_token(value)
        if not value:
            raise ValueError(f"{args.key} may not be empty (use `dawms config unset`)")
        data = _read(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data[args.key] = value
    write_config(path, data)
    print(f"{args.key} set in {path}")
    return 0


def cmd_config_unset(args: argparse.Namespace, st: Settings | None) -> int:
    path = config_path()
    try:
        data = _read(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if data.pop(args.key, None) is None:
        print(f"{args.key} was not set in {path}")
        return 0
    write_config(path, data)
    print(f"{args.key} removed from {path}")
    return 0


def cmd_config_path(args: argparse.Namespace, st: Settings | None) -> int:
    print(config_path())
    return 0


def register(groups: Groups) -> None:
    cfg = groups("config", "the client config file (server URL, token)")
    sh = cfg.add_parser("show", help="the settings in force and where each comes from")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(fn=cmd_config_show)
    se = cfg.add_parser("set", help="set a key in the config file (written with mode 0600)")
    se.add_argument("key", choices=KEYS)
    se.add_argument("value", help="the value; - reads it from standard input (for a token)")
    se.set_defaults(fn=cmd_config_set, repairs_config=True)
    un = cfg.add_parser("unset", help="remove a key from the config file")
    un.add_argument("key", choices=KEYS)
    un.set_defaults(fn=cmd_config_unset, repairs_config=True)
    cfg.add_parser("path", help="print where the config file is").set_defaults(
        fn=cmd_config_path, repairs_config=True)
