"""Workers that populate the element's tables, and the jobs they leave behind.

``elp worker`` runs ``populate(reserve_jobs=True, suppress_errors=True)`` over the element's
computed tables in dependency order (RecordingInfo, ModelTraining, ModelEvaluation,
PoseEstimation, EnsembleSmoothing). Any number of workers on any number of machines can share
one database: the jobs tables make each key run once. A failing key is recorded in the jobs
table with its error message and the worker moves on.

``elp jobs list|clear`` shows or removes errored and reserved (possibly stale: a worker that
was killed leaves its reservation behind) jobs so that their keys can run again. The list
shows each job's host, pid and age, and for a reservation made on this host whether its
process still runs. ``clear --status reserved`` removes only reservations whose process is
gone; one whose process is alive, or that was made on another host (where this cannot be
checked), needs ``--force``. DataJoint 0.14 keeps one jobs table per schema, 2.x one per
table; ``dj_compat`` hides the difference.

A worker that finds its key already populated by another worker (possible only after a live
reservation was force-cleared) logs it and goes on; the duplicate is not recorded as an error.

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


def table_names() -> list[str]:
    """Names of the computed tables a worker runs (``pipeline.computed_tables()`` owns them)."""
    from .pipeline import computed_tables

    return [t.__name__ for t in computed_tables()]


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
        n_done, errors = populate_table(table, restrictions, log=log)
        done += n_done
        failed += len(errors)
        if n_done or errors:
            log(f"{table.__name__}: {n_done} populated, {len(errors)} failed")
        for key, message in errors:
            log(f"  {table.__name__} {key}: {message.splitlines()[0] if message else ''}")
    return done, failed


def populate_table(table, restrictions: Sequence = (), *, log=print,
                   max_restarts: int = 100) -> tuple[int, list[tuple[dict, str]]]:
    """Populate one table with reserved jobs; returns (keys populated, [(key, error)]).

    A key that another worker populated meanwhile is not a failure: 0.14 reports it as a
    DuplicateError (its error job is removed again), 2.x raises out of ``populate`` when it
    tries to record that error on the vanished job row (the pass is restarted for the keys
    left; the keys that pass populated are not counted, since DataJoint does not say).
    """
    done, errors = 0, []
    for _ in range(max_restarts):
        try:
            result = dj_compat.populate(table, *restrictions, reserve_jobs=True, suppress_errors=True,
                                        display_progress=False)
        except Exception as exc:  # noqa: BLE001 - only duplicates are survivable; others re-raised
            if not dj_compat.is_duplicate_error(exc):
                raise
            log(f"{table.__name__}: a key was populated by another worker meanwhile; going on "
                f"({_first_line(exc)})")
            continue
        done += result.success_count
        for key, message in result.errors:
            if dj_compat.is_duplicate_error(message) and table & key:
                dj_compat.clear_job(table, key, "error")
                log(f"{table.__name__} {key}: already populated by another worker; skipped")
            else:
                errors.append((key, message))
        return done, errors
    raise RuntimeError(f"{table.__name__}: gave up after {max_restarts} passes that met duplicates")


def _first_line(exc: BaseException) -> str:
    text = f"{exc.__class__.__name__}: {exc}"
    return text.splitlines()[0]


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
    parser.add_argument("--table", action="append", choices=table_names(),
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
        parser.add_argument("--status", choices=list(dj_compat.JOB_STATUSES), default=None,
                            help="which jobs (list: both by default; clear: error by default)")
        parser.add_argument("--force", action="store_true",
                            help="clear: also reservations whose process is alive or on another host "
                                 "(without it they are kept, named on stderr, exit status 1)")


def run_from_cli(args: argparse.Namespace) -> int:
    dj_compat.configure_from_env()
    activate(args.pipeline, args.prefix, args.root_dir, args.processed_dir)
    tables = selected_tables(args.table)
    dj_compat.ensure_jobs_tables(tables)
    try:
        dj_compat.check_restrictions(tables, args.restrict)
    except ValueError as exc:
        print(f"elp {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker":
        total = run(tables, args.restrict, loop=args.loop, sleep_s=args.sleep, max_idle=args.max_idle,
                    log=lambda m: print(m, flush=True))
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
        print(f"elp jobs: kept {len(result.kept)} reservation(s) whose worker is alive or runs on another "
              f"host; stop it first, or use --force", file=sys.stderr)
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
