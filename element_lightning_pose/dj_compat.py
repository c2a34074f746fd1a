"""The differences between DataJoint 0.14.x and 2.x that the element's schemas touch.

Everything generation-specific lives here, so that the table definitions read the same on
both: they spell array attributes ``{BLOB}`` and double-precision numbers ``{FLOAT64}``.
Only types portable to PostgreSQL are used elsewhere (``int``, ``smallint``, ``float``,
``varchar(n)``, ``datetime``, ``enum``). Nothing here patches DataJoint.

Differences handled (verified against datajoint 0.14.10 and 2.3.5):

- arrays: 0.14 ``longblob``; 2.x ``<blob>`` (2.x ``longblob`` is raw bytes).
- double precision: 0.14 ``double`` (MySQL only); 2.x ``float64`` (portable).
- configuration: 2.x reads ``DJ_HOST``/``DJ_USER``/``DJ_PASS``/``DJ_PORT``/``DJ_BACKEND``
  itself and has a strict config; 0.14 reads host/user/password from the environment but not
  the port, and needs ``database.use_tls = False`` for a server without TLS.
- ``populate()`` returns ``{"success_count", "error_list"}`` on 2.x, other shapes on 0.14.
- jobs: one ``schema.jobs`` table on 0.14; one ``Table.jobs`` per table on 2.x.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import datajoint as dj

DJ_VERSION: str = dj.__version__
DJ_MAJOR: int = int(DJ_VERSION.split(".")[0])
IS_DJ2: bool = DJ_MAJOR >= 2

# Attribute types, spelled as each generation wants them (2.x warns on native SQL types).
BLOB: str = "<blob>" if IS_DJ2 else "longblob"


class _InheritedNativeTypeFilter(logging.Filter):
    """Drop DataJoint 2.x's "Native type ... is used" warning.

    2.3.5 issues it for attributes that a foreign key copies from a parent table (the parent's
    int32 reads back as SQL 'integer'), which no definition can spell differently; our own
    attributes use core types.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Native type ")


if IS_DJ2:
    logging.getLogger("datajoint").addFilter(_InheritedNativeTypeFilter())
FLOAT64: str = "float64" if IS_DJ2 else "double"
FLOAT32: str = "float32" if IS_DJ2 else "float"
INT32: str = "int32" if IS_DJ2 else "int"
INT16: str = "int16" if IS_DJ2 else "smallint"


def backend() -> str:
    """The database backend in use: 'postgresql' or 'mysql' (0.14 knows only MySQL)."""
    if IS_DJ2:
        return str(dj.config.database.backend)
    return "mysql"


def configure_from_env(env: dict[str, str] | None = None) -> None:
    """Point DataJoint at the server named by ``DJ_HOST``/``DJ_PORT``/``DJ_USER``/``DJ_PASS``.

    2.x already reads those variables when it is imported; calling this again after they
    change (tests, ``elp db start`` within one process) updates the live config.
    """
    env = dict(os.environ if env is None else env)
    if IS_DJ2:
        mapping = {
            "DJ_HOST": "database.host",
            "DJ_USER": "database.user",
            "DJ_PASS": "database.password",
            "DJ_BACKEND": "database.backend",
        }
        for var, key in mapping.items():
            if env.get(var):
                dj.config[key] = env[var]
        if env.get("DJ_PORT"):
            dj.config["database.port"] = int(env["DJ_PORT"])
        if env.get("DJ_USE_TLS"):
            dj.config["database.use_tls"] = env["DJ_USE_TLS"].lower() in {"1", "true", "yes"}
        return
    host = env.get("DJ_HOST")
    if host:
        port = env.get("DJ_PORT")
        dj.config["database.host"] = f"{host}:{port}" if port and ":" not in host else host
    if env.get("DJ_USER"):
        dj.config["database.user"] = env["DJ_USER"]
    if env.get("DJ_PASS"):
        dj.config["database.password"] = env["DJ_PASS"]
    if env.get("DJ_BACKEND", "mysql") != "mysql":
        raise RuntimeError(
            f"DataJoint {DJ_VERSION} supports only MySQL/MariaDB, but DJ_BACKEND={env['DJ_BACKEND']}"
        )
    dj.config["database.use_tls"] = env.get("DJ_USE_TLS", "false").lower() in {"1", "true", "yes"}


def schema(name: str, context: dict | None = None, **kwargs: Any) -> dj.Schema:
    """A ``dj.Schema`` object (``dj.schema`` is gone in 2.x)."""
    return dj.Schema(name, context, **kwargs)


def virtual_module(module_name: str, schema_name: str) -> Any:
    """Access an existing schema without its Python classes."""
    if IS_DJ2:
        return dj.VirtualModule(module_name, schema_name)
    return dj.create_virtual_module(module_name, schema_name)


# --------------------------------------------------------------------------- fetching


def fetch_dicts(expression: Any, *attrs: str, order_by: str | Iterable[str] | None = None) -> list[dict]:
    """All rows as dicts (2.x: ``to_dicts``; 0.14: ``fetch(as_dict=True)``)."""
    if attrs:
        expression = expression.proj(*attrs)
    if IS_DJ2:
        return list(expression.to_dicts(order_by=order_by))
    return list(expression.fetch(as_dict=True, order_by=order_by))


def fetch_keys(expression: Any, order_by: str | None = None) -> list[dict]:
    """Primary keys of all rows."""
    if IS_DJ2:
        return list(expression.keys(order_by=order_by))
    return list(expression.fetch("KEY", order_by=order_by))


def fetch_column(expression: Any, attr: str, order_by: str | None = None) -> list:
    """One attribute of every row, as a list."""
    if IS_DJ2:
        return list(expression.to_arrays(attr, order_by=order_by))
    return list(expression.fetch(attr, order_by=order_by))


# --------------------------------------------------------------------------- populate


@dataclass
class PopulateResult:
    """What a ``populate`` call did, in one shape for both generations."""

    success_count: int = 0
    errors: list[tuple[dict, str]] = field(default_factory=list)


def populate(table: Any, *restrictions: Any, **kwargs: Any) -> PopulateResult:
    """Run ``table.populate`` and normalise its return value."""
    table = table() if isinstance(table, type) else table
    before = len(table)
    result = table.populate(*restrictions, **kwargs)
    if isinstance(result, dict):  # 2.x
        errors = [(dict(key), str(msg)) for key, msg in result.get("error_list", [])]
        return PopulateResult(int(result.get("success_count", 0)), errors)
    # 0.14: a list of (key, error) with suppress_errors=True (a dict of counts with
    # return_success_count=True); the success count is read from the table itself.
    errors = []
    if isinstance(result, list):
        errors = [(dict(item[0]), str(item[1])) for item in result]
    return PopulateResult(max(len(table) - before, 0), errors)


# --------------------------------------------------------------------------- jobs


def _job_tables(tables: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(table, jobs table) pairs; on 0.14 the schema's single jobs table restricted to it."""
    pairs = []
    for table in tables:
        table = table() if isinstance(table, type) else table
        if IS_DJ2:
            pairs.append((table, table.jobs))
        else:
            jobs = table.connection.schemas[table.database].jobs
            pairs.append((table, jobs & {"table_name": table.table_name}))
    return pairs


def ensure_jobs_tables(tables: Iterable[Any], attempts: int = 5) -> None:
    """Declare the jobs tables now, so that concurrent workers do not race to create them.

    DataJoint declares a jobs table the first time it is used; on 2.x/PostgreSQL two workers
    doing so at once collide (a duplicate type error). The loser retries and finds the table.
    """
    import time

    for table in tables:
        table = table() if isinstance(table, type) else table
        for attempt in range(attempts):
            try:
                if IS_DJ2:
                    table.jobs  # noqa: B018 - the property declares the table
                else:
                    table.connection.schemas[table.database].jobs  # noqa: B018
                break
            except Exception:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))


def list_jobs(tables: Iterable[Any], status: str | None = None) -> list[dict]:
    """Job rows (``reserved`` or ``error``, optionally filtered by status) of the given tables."""
    rows = []
    for table, jobs in _job_tables(tables):
        query = jobs & {"status": status} if status else jobs
        if IS_DJ2:
            # 2.x jobs tables also list pending and completed keys; report the noteworthy ones.
            query = query & "status in ('reserved', 'error')" if status is None else query
        for row in fetch_dicts(query):
            row["table"] = table.__class__.__name__
            rows.append(row)
    return rows


def clear_jobs(tables: Iterable[Any], status: str = "error") -> int:
    """Delete job rows of a status ('error' or 'reserved') so their keys can run again."""
    if status not in ("error", "reserved"):
        raise ValueError(f"status must be 'error' or 'reserved', not {status!r}")
    removed = 0
    for _, jobs in _job_tables(tables):
        query = jobs & {"status": status}
        removed += len(query)
        if IS_DJ2:
            query.delete()
        else:
            query.delete_quick()
    return removed
