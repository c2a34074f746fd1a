"""``elp worker`` and ``elp jobs``: populate the element's tables as a worker; list or clear jobs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from element_lightning_pose import dj_compat, worker
from element_lightning_pose.cli import fail
from element_lightning_pose.engine.training.stopping import STOP_SIGNALS, stop_signals_left_at_default


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
        parser.add_argument(
            "--processes",
            type=_positive_int,
            default=1,
            help="workers to run side by side on this machine, the cores split between them (OMP_NUM_THREADS = "
            "cores / N each, unless set): one network per core predicts more frames per second than one "
            "network over all cores (default 1)",
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
    if args.command == "worker" and args.processes > 1:
        return _run_side_by_side(args)
    if args.command == "worker":
        label = os.environ.get(WORKER_LABEL, "")
        prefix = f"[worker {label}] " if label else ""

        def say(message: str) -> None:
            # one write per line: a pipe keeps a short write whole, so workers side by side never
            # interleave within a line (print writes the text and its newline apart when unbuffered)
            sys.stdout.write(f"{prefix}{message}\n")
            sys.stdout.flush()

        if label:
            say(f"pid {os.getpid()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
        total = worker.run(tables, args.restrict, loop=args.loop, sleep_s=args.sleep, max_idle=args.max_idle, log=say)
        say(f"worker done: {total} key(s) populated")
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


WORKER_LABEL = "ELP_WORKER_LABEL"  # "i/N" of a worker started by --processes; its lines start with it


@contextmanager
def signals_passed_on(children: list[subprocess.Popen]) -> Iterator[None]:
    """The signals that stop a training run (SIGTERM, SIGINT, and SIGHUP and SLURM's SIGUSR1 where
    left at their default: engine.training.stopping) are passed on to ``children`` while they run, and
    this process lives on to wait for them. At its default, SIGUSR1 (``sbatch --signal``, which
    reaches every process of the job step) ended this process at once, and SLURM then killed the
    workers it had left, in the middle of keeping their runs."""

    def pass_on(signum: int, frame: object) -> None:
        # a signal sent to the whole group (SLURM's, a closed terminal's) reaches a worker twice:
        # a stopped run ignores the second while it winds down, milliseconds before it is kept
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signums = [*STOP_SIGNALS, *stop_signals_left_at_default()]
    previous = {signum: signal.signal(signum, pass_on) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_side_by_side(args: argparse.Namespace) -> int:
    """``--processes N``: N workers of the same arguments, the cores split between them.

    Each is a process of its own (the jobs table gives each key to one of them). The stop
    signals are passed on to them (:func:`signals_passed_on`); the status is the worst of theirs.
    """
    n = args.processes
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    command = [sys.executable, "-m", "element_lightning_pose.cli", "worker", *_worker_arguments(args)]
    children: list[subprocess.Popen] = []

    with signals_passed_on(children):
        for i in range(n):
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, WORKER_LABEL: f"{i + 1}/{n}"}
            children.append(subprocess.Popen(command, env=env))
        statuses = [child.wait() for child in children]
    worst = max((128 - code if code < 0 else code) for code in statuses)  # a signal's death as the shell says it
    print(f"elp worker: {n} workers done at {threads} thread(s) each; exit statuses {statuses}", flush=True)
    return worst


def _worker_arguments(args: argparse.Namespace) -> list[str]:
    """The command line of one worker of ``args`` (everything but ``--processes``)."""
    out = ["--pipeline", args.pipeline]
    for option, value in (
        ("--prefix", args.prefix),
        ("--root-dir", args.root_dir),
        ("--processed-dir", args.processed_dir),
    ):
        if value is not None:
            out += [option, value]
    for table in args.table or []:
        out += ["--table", table]
    for restriction in args.restrict:
        out += ["--restrict", json.dumps(restriction)]
    out += ["--loop", "--sleep", str(args.sleep)] if args.loop else ["--once"]
    if args.max_idle is not None:
        out += ["--max-idle", str(args.max_idle)]
    return out


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
