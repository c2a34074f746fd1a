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

The command line is :mod:`element_lightning_pose.cli.worker`. Which pipeline? ``--pipeline MODULE`` is imported first; the lab's own module activates the
schemas when imported. The default, ``element_lightning_pose.pipeline``, is activated here
with ``--prefix`` / ``--root-dir`` (or ``LP_SCHEMA_PREFIX`` / ``LP_ROOT_DATA_DIR``).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterable, Sequence

from element_lightning_pose import dj_compat


def table_names() -> list[str]:
    """Names of the computed tables a worker runs (``pipeline.computed_tables()`` owns them)."""
    from element_lightning_pose.pipeline import computed_tables

    return [t.__name__ for t in computed_tables()]


def activate(pipeline: str, prefix: str | None, root_dir: str | None, processed_dir: str | None) -> None:
    """Import the pipeline module; activate the reference pipeline when that is the one."""
    module = importlib.import_module(pipeline)
    from element_lightning_pose import model

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
    from element_lightning_pose.pipeline import computed_tables

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


def populate_table(
    table, restrictions: Sequence = (), *, log=print, max_restarts: int = 100
) -> tuple[int, list[tuple[dict, str]]]:
    """Populate one table with reserved jobs; returns (keys populated, [(key, error)]).

    A key that another worker populated meanwhile is not a failure: 0.14 reports it as a
    DuplicateError (its error job is removed again), 2.x raises out of ``populate`` when it
    tries to record that error on the vanished job row (the pass is restarted for the keys
    left; the keys that pass populated are not counted, since DataJoint does not say).
    """
    done, errors = 0, []
    for _ in range(max_restarts):
        try:
            result = dj_compat.populate(
                table,
                *map(dj_compat.match, restrictions),
                reserve_jobs=True,
                suppress_errors=True,
                display_progress=False,
            )
        except Exception as exc:  # noqa: BLE001 - only duplicates are survivable; others re-raised
            if not dj_compat.is_duplicate_error(exc):
                raise
            log(f"{table.__name__}: a key was populated by another worker meanwhile; going on ({_first_line(exc)})")
            continue
        done += result.success_count
        for key, message in result.errors:
            if dj_compat.is_duplicate_error(message) and table & dj_compat.match(key):
                dj_compat.clear_job(table, key, "error")
                log(f"{table.__name__} {key}: already populated by another worker; skipped")
            else:
                errors.append((key, message))
        return done, errors
    raise RuntimeError(f"{table.__name__}: gave up after {max_restarts} passes that met duplicates")


def _first_line(exc: BaseException) -> str:
    text = f"{exc.__class__.__name__}: {exc}"
    return text.splitlines()[0]


def run(
    tables: list,
    restrictions: Sequence = (),
    *,
    loop: bool = False,
    sleep_s: float = 30.0,
    max_idle: int | None = None,
    log=print,
) -> int:
    """Populate once, or repeatedly until ``max_idle`` consecutive passes found nothing to do."""
    total = idle = 0
    while True:
        done, failed = run_once(tables, restrictions, log=log)
        total += done
        idle = 0 if done else idle + 1
        if not loop or (max_idle is not None and idle >= max_idle):
            return total
        time.sleep(sleep_s)
