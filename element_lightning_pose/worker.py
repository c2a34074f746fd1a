"""Workers that populate the element's tables, and the jobs they leave behind.

``elp worker`` runs ``populate(reserve_jobs=True, suppress_errors=True)`` over the element's
computed tables in dependency order (RecordingInfo, ModelTraining, ModelEvaluation,
PoseEstimation, EnsembleSmoothing). Any number of workers on any number of machines can share
one database: the jobs tables make each key run once. A failing key is recorded in the jobs
table with its error message and the worker moves on.

``elp jobs list|clear`` shows or removes errored and reserved (possibly stale: a worker that
was killed leaves its reservation behind) jobs so that their keys can run again. DataJoint
0.14 keeps one jobs table per schema, 2.x one per table; ``dj_compat`` hides the difference.

Which pipeline? ``--pipeline MODULE`` is imported first; the lab's own module activates the
schemas when imported. The default, ``element_lightning_pose.pipeline``, is activated here
with ``--prefix`` / ``--root-dir`` (or ``LP_SCHEMA_PREFIX`` / ``LP_ROOT_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import json
from typing import Iterable, Sequence

from . import dj_compat

TABLE_NAMES = ("RecordingInfo", "ModelTraining", "ModelEvaluation", "PoseEstimation", "EnsembleSmoothing")


def activate(pipeline: str, prefix: str | None, root_dir: str | None, processed_dir: str | None) -> None:
    """Import the pipeline module; activate the reference pipeline when that is the one."""
    module = importlib.import_module(pipeline)
    from . import model

    if not model.schema.is_activated() and hasattr(module, "activate_pipeline"):
        module.activate_pipeline(
            prefix or os.environ.get("LP_SCHEMA_PREFIX", "lp_"),
            root_dir=root_dir,
            processed_dir=processed_dir,
        )
    if not model.schema.is_activated():
        raise RuntimeError(f"importing {pipeline!r} did not activate the element's schemas")


def selected_tables(names: Iterable[str] | None = None) -> list:
    """The computed tables to populate, in dependency order, optionally only ``names``."""
    from .pipeline import computed_tables

    tables = computed_tables()
    if not names:
        return tables
    by_name = {t.__name__: t for t in tables}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; choose from {list(by_name)}")
    return [t for t in tables if t.__name__ in names]


def run_once(tables: list, restrictions: Sequence = (), *, log=print) -> tuple[int, int]:
    """One pass over ``tables``; returns (keys populated, keys that failed)."""
    done = failed = 0
    for table in tables:
        result = dj_compat.populate(table, *restrictions, reserve_jobs=True, suppress_errors=True,
                                    display_progress=False)
        done += result.success_count
        failed += len(result.errors)
        if result.success_count or result.errors:
            log(f"{table.__name__}: {result.success_count} populated, {len(result.errors)} failed")
        for key, message in result.errors:
            log(f"  {table.__name__} {key}: {message.splitlines()[0] if message else ''}")
    return done, failed


def run(tables: list, restrictions: Sequence = (), *, loop: bool = False, sleep_s: float = 30.0,
        max_idle: int | None = None, log=print) -> int:
    """Populate once, or repeatedly until ``max_idle`` consecutive passes found nothing to do."""
    total = idle = 0
    while True:
        done, failed = run_once(tables, restrictions, log=log)
        total += done
        idle = 0 if done else idle + 1
        if not loop or (max_idle is not None and idle >= max_idle):
            return total
        time.sleep(sleep_s)


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser, command: str = "worker") -> None:
    parser.add_argument("--pipeline", default=os.environ.get("LP_PIPELINE", "element_lightning_pose.pipeline"),
                        help="module that activates the schemas when imported (default: %(default)s)")
    parser.add_argument("--prefix", help="schema prefix of the reference pipeline (default: $LP_SCHEMA_PREFIX or lp_)")
    parser.add_argument("--root-dir", help="root data directory (default: $LP_ROOT_DATA_DIR)")
    parser.add_argument("--processed-dir", help="processed-data directory (default: $LP_PROCESSED_DATA_DIR)")
    parser.add_argument("--table", action="append", choices=TABLE_NAMES,
                        help="populate only this table (repeatable; default: all, in order)")
    parser.add_argument("--restrict", action="append", type=_json_dict, default=[], metavar="JSON",
                        help='only keys matching this JSON object, e.g. \'{"subject": "m1"}\' (repeatable: all must match)')
    if command == "worker":
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one pass over the tables, then exit (default)")
        mode.add_argument("--loop", action="store_true", help="keep polling for new work")
        parser.add_argument("--sleep", type=float, default=30.0, help="seconds between passes with --loop")
        parser.add_argument("--max-idle", type=int, default=None,
                            help="with --loop, stop after this many passes that found nothing")
    else:
        parser.add_argument("action", choices=["list", "clear"])
        parser.add_argument("--status", choices=["error", "reserved"], default=None,
                            help="which jobs (list: both by default; clear: error by default)")


def run_from_cli(args: argparse.Namespace) -> int:
    dj_compat.configure_from_env()
    activate(args.pipeline, args.prefix, args.root_dir, args.processed_dir)
    tables = selected_tables(args.table)
    dj_compat.ensure_jobs_tables(tables)
    if args.command == "worker":
        total = run(tables, args.restrict, loop=args.loop, sleep_s=args.sleep, max_idle=args.max_idle,
                    log=lambda m: print(m, flush=True))
        print(f"worker done: {total} key(s) populated", flush=True)
        return 0
    if args.action == "list":
        rows = dj_compat.list_jobs(tables, args.status)
        for row in rows:
            message = (row.get("error_message") or "").splitlines()
            key = row.get("key") if "key" in row else {k: v for k, v in row.items() if k not in _JOB_FIELDS}
            print(f"{row['table']:18s} {row['status']:9s} {key} {message[0] if message else ''}")
        print(f"{len(rows)} job(s)", file=sys.stderr)
        return 0
    removed = dj_compat.clear_jobs(tables, args.status or "error")
    print(f"cleared {removed} {args.status or 'error'} job(s)")
    return 0


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--restrict {text!r} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--restrict {text!r} must be a JSON object")
    return value


_JOB_FIELDS = {"table", "status", "error_message", "error_stack", "user", "host", "pid", "connection_id",
               "timestamp", "key_hash", "table_name", "key", "reserved_time", "completed_time", "duration",
               "priority", "scheduled_time", "version"}
