"""``elp worker`` and ``elp jobs``: populate the element's tables as a worker; list or clear jobs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from element_lightning_pose import dj_compat, worker
from element_lightning_pose.cli import fail


def configure_parser(parser: argparse.ArgumentParser, command: str = "worker") -> None:
    parser.add_argument(
        "--pipeline",
        default=os.environ.get("LP_PIPELINE", "element_lightning_pose.pipeline"),
        help="module that activates the schemas when imported (default: %(default)s)",
    )
    parser.add_argument("--prefix", help="schema prefix of the reference pipeline (default: $LP_SCHEMA_PREFIX or lp_)")
    parser.add_argument("--root-dir", help="root data directory (default: $LP_ROOT_DATA_DIR)")
    parser.add_argument("--processed-dir", help="processed-data directory (default: $LP_PROCESSED_DATA_DIR)")
    parser.add_argument(
        "--table",
        action="append",
        choices=worker.table_names(),
        help="populate only this table (repeatable; default: all, in order)",
    )
    parser.add_argument(
        "--restrict",
        action="append",
        type=_json_dict,
        default=[],
        metavar="JSON",
        help='only keys matching this JSON object, e.g. \'{"subject": "m1"}\' (repeatable: all must match)',
    )
    if command == "worker":
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one pass over the tables, then exit (default)")
        mode.add_argument("--loop", action="store_true", help="keep polling for new work")
        parser.add_argument("--sleep", type=float, default=30.0, help="seconds between passes with --loop")
        parser.add_argument(
            "--max-idle", type=int, default=None, help="with --loop, stop after this many passes that found nothing"
        )
    else:
        parser.add_argument("action", choices=["list", "clear"])
        parser.add_argument(
            "--status",
            choices=list(dj_compat.JOB_STATUSES),
            default=None,
            help="which jobs (list: both by default; clear: error by default)",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="clear: also reservations whose process is alive or on another host "
            "(without it they are kept, named on stderr, exit status 1)",
        )


def run(args: argparse.Namespace) -> int:
    dj_compat.configure_from_env()
    worker.activate(args.pipeline, args.prefix, args.root_dir, args.processed_dir)
    tables = worker.selected_tables(args.table)
    dj_compat.ensure_jobs_tables(tables)
    try:
        dj_compat.check_restrictions(tables, args.restrict)
    except ValueError as exc:
        return fail(args.command, exc)
    if args.command == "worker":
        total = worker.run(
            tables,
            args.restrict,
            loop=args.loop,
            sleep_s=args.sleep,
            max_idle=args.max_idle,
            log=lambda m: print(m, flush=True),
        )
        print(f"worker done: {total} key(s) populated", flush=True)
        return 0
    if args.action == "list":
        rows = dj_compat.list_jobs(tables, args.status, args.restrict)
        for row in rows:
            print(format_job(row))
        print(f"{len(rows)} job(s)", file=sys.stderr)
        return 0
    status = args.status or "error"
    result = dj_compat.clear_jobs(tables, status, args.restrict, force=args.force)
    print(f"cleared {result.removed} {status} job(s)")
    if result.kept:
        for row in result.kept:
            print(f"kept: {format_job(row)}", file=sys.stderr)
        print(
            f"elp jobs: kept {len(result.kept)} reservation(s) whose worker is alive or runs on another "
            f"host; stop it first, or use --force",
            file=sys.stderr,
        )
        return 1
    return 0


def format_job(row: dict) -> str:
    """One line per job: table, status, key, host:pid, liveness, age, first line of the error."""
    message = (row.get("error_message") or "").splitlines()
    alive = {True: "alive", False: "dead", None: "?"}[row.get("alive")]
    where = f"{row.get('host') or '?'}:{row.get('pid') or '?'}"
    if row["status"] == "reserved":
        where += f" ({alive})"
    age = "" if row.get("age_s") is None else _age_text(row["age_s"])
    return f"{row['table']:18s} {row['status']:9s} {row['key']} {where} {age} {message[0] if message else ''}".rstrip()


def _age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}min ago"
    return f"{seconds // 3600}h ago"


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--restrict {text!r} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--restrict {text!r} must be a JSON object")
    return value
