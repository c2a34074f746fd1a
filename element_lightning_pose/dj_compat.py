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
- a delete whose cascade reaches a part table without its master is refused by both; 0.14
  includes the masters with ``force_masters=True``, 2.x with ``part_integrity="cascade"``.
- text in a restriction: 0.14 leaves a double quote unescaped, 2.x on PostgreSQL doubles a
  backslash; :func:`match` for restrictions, :class:`KeyTextChecked` for names in keys.
"""

from __future__ import annotations

import csv
import logging
import os
import pathlib
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import datajoint as dj
import pandas as pd

from element_lightning_pose.engine.atomic import pid_alive
from element_lightning_pose.engine.errors import ElpError

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


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def match(restriction: Any) -> Any:
    """``restriction`` made safe to restrict by on both generations; use it for every
    restriction that holds text from a user or a caller (a folder, a name, a key passed in).

    A mapping (attribute = value, all of them) comes back as a restriction that matches the
    values exactly; a list (any of its restrictions) item by item; anything else (a query, a
    string of SQL written in the code) unchanged. DataJoint 0.14 writes a string between
    double quotes without escaping a double quote inside it, so a value holding one ends the
    literal early and changes the query (``x" OR "1"="1`` matched every row); doubled, MySQL
    reads it as one. DataJoint 2.x doubles a backslash, which PostgreSQL (standard strings)
    reads as two: such a value is compared with its backslashes spelled ``chr(92)`` instead.
    """
    if isinstance(restriction, Mapping):
        return _match_values(restriction)
    if isinstance(restriction, list):
        return [match(item) for item in restriction]
    return restriction


def _match_values(values: Mapping[str, Any]) -> Any:
    if not IS_DJ2:
        return {k: v.replace('"', '""') if isinstance(v, str) else v for k, v in values.items()}
    if backend() != "postgresql":
        return dict(values)
    plain = {k: v for k, v in values.items() if not (isinstance(v, str) and "\\" in v)}
    if len(plain) == len(values):
        return plain
    conditions: list[Any] = [plain]
    for name, value in values.items():
        if name in plain:
            continue
        if not _IDENTIFIER.match(name):  # attribute names are the code's, never a user's
            raise ValueError(f"restriction attribute {name!r} is not a plain identifier")
        # no backslash in the SQL: DataJoint reads a string restriction's column names with a
        # MySQL parser, which takes a backslash before a quote for an escape
        pieces = " || chr(92) || ".join("'" + piece.replace("'", "''") + "'" for piece in value.split("\\"))
        conditions.append(f'"{name}" = {pieces}')
    return dj.AndList(conditions)


class KeyTextError(ElpError, ValueError):
    """A name that would be part of a primary key holds a character a restriction cannot carry."""


def check_key_text(source: str, values: Mapping[str, Any]) -> None:
    """Refuse a string in ``values`` (a key's attributes) that holds a double quote or a
    backslash, with a :class:`KeyTextError` naming ``source``, the attribute and the value.

    Restrictions by such a value break inside DataJoint itself, where :func:`match` cannot
    reach: 0.14's ``populate`` restricts by each key (``key in table``) with the quote
    unescaped, a syntax error or, crafted, another condition; 2.x on PostgreSQL never finds a
    key with a backslash. So a name that becomes part of a key (a subject, a model, a body
    part, a view, a camera, a calibration) is refused where it enters, on both generations
    alike, before anything is inserted.
    """
    for name, value in values.items():
        if isinstance(value, str) and ('"' in value or "\\" in value):
            what, why = (
                ("a double quote", "DataJoint 0.14 writes it into its SQL unescaped")
                if '"' in value
                else ("a backslash", "DataJoint 2.x on PostgreSQL cannot restrict by it")
            )
            raise KeyTextError(
                f"{source}: {name} {value!r} holds {what}, which a name in a key may not hold ({why}); rename it"
            )


class KeyTextChecked:
    """Mixin for a table where names enter a primary key (``class Model(KeyTextChecked,
    dj.Manual)``): every insert is checked by :func:`check_key_text` first, rows given as
    mappings, numpy records, sequences in heading order, a pandas or polars DataFrame, a pyarrow
    Table or a CSV file's ``pathlib.Path``; nothing is inserted when one row is refused. Rows
    copied from a query are already in the database."""

    def insert(self, rows: Any, *args: Any, **kwargs: Any) -> Any:
        rows = _checked_key_rows(self, rows)
        return super().insert(rows, *args, **kwargs)  # type: ignore[misc]


def _checked_key_rows(table: Any, rows: Any) -> Any:
    source = type(table).__name__
    key = list(table.primary_key)
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index()
        for name in key:
            if name in frame.columns:
                for value in frame[name]:
                    check_key_text(source, {name: value})
        return rows
    rows = _as_row_list(rows)
    if isinstance(rows, (dj.expression.QueryExpression, os.PathLike, str)) or not isinstance(rows, Iterable):
        return rows
    rows = list(rows)
    names = list(table.heading.names)
    for row in rows:
        if isinstance(row, Mapping):
            values = {name: row.get(name) for name in key}
        elif hasattr(row, "dtype") and getattr(row.dtype, "names", None):
            values = {name: row[name] for name in key if name in row.dtype.names}
        elif isinstance(row, (list, tuple)):
            values = {name: row[names.index(name)] for name in key if names.index(name) < len(row)}
        else:
            continue
        check_key_text(source, values)
    return rows


def _as_row_list(rows: Any) -> Any:
    """The rows DataJoint itself would read from a CSV path, a polars DataFrame or a pyarrow Table.

    Read here once and passed on as dicts, so the rows checked are the rows inserted (the file is
    not read a second time). Both generations read a ``pathlib.Path`` as a CSV with a header row.
    """
    if isinstance(rows, pathlib.Path):
        with open(rows, newline="") as data_file:
            return list(csv.DictReader(data_file, delimiter=","))
    module, name = type(rows).__module__, type(rows).__name__
    if module.startswith("polars") and name == "DataFrame":
        return rows.to_dicts()
    if module.startswith("pyarrow") and name == "Table":
        return rows.to_pylist()
    return rows


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
        raise RuntimeError(f"DataJoint {DJ_VERSION} supports only MySQL/MariaDB, but DJ_BACKEND={env['DJ_BACKEND']}")
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


def delete_cascading(expression: Any, *, prompt: bool | None = None) -> int:
    """Delete rows and everything that depends on them, the masters of part tables reached
    included (a ``Triangulation`` whose ``PoseSource``, or an ``EnsembleSmoothing`` whose
    ``Member``, is a deleted ``PoseEstimation``).

    A plain ``delete()`` refuses such a cascade on both generations. ``prompt`` (default:
    ``dj.config['safemode']``) asks before committing. Returns the rows deleted from
    ``expression``'s own table.
    """
    if IS_DJ2:
        return int(expression.delete(prompt=prompt, part_integrity="cascade"))
    return int(expression.delete(safemode=prompt, force_masters=True))


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


def jobs_table(table: Any) -> Any:
    """The jobs table that holds ``table``'s jobs (0.14: the schema's, shared by its tables)."""
    table = table() if isinstance(table, type) else table
    return table.jobs if IS_DJ2 else table.connection.schemas[table.database].jobs


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


JOB_STATUSES = ("error", "reserved")


def _job_key(row: dict, jobs: Any) -> dict:
    """The populate key of a job row (2.x: its key columns; 0.14: the ``key`` blob)."""
    if IS_DJ2:
        return {k: row[k] for k in jobs.primary_key}
    return dict(row.get("key") or {})


def _job_changed(row: dict) -> Any:
    """When the job last changed status (2.x: reserved/completed time; 0.14: its timestamp)."""
    if IS_DJ2:
        when = row.get("reserved_time") if row.get("status") == "reserved" else row.get("completed_time")
        return when or row.get("created_time")
    return row.get("timestamp")


def _server_now(connection: Any) -> Any:
    """The server's local time, the clock the jobs tables' timestamps were written with."""
    sql = "SELECT LOCALTIMESTAMP(3)" if backend() == "postgresql" else "SELECT CURRENT_TIMESTAMP(3)"
    return connection.query(sql).fetchone()[0]


def process_alive(host: str, pid: int) -> bool | None:
    """Whether process ``pid`` on ``host`` runs: None when that cannot be told from here.

    Only a process on this machine can be checked. A pid that exists counts as alive even if
    it may have been reused: clearing a live worker's reservation is the worse mistake.
    """
    if not pid or host != platform.node():
        return None
    return pid_alive(int(pid))


def check_restrictions(tables: Iterable[Any], restrictions: Iterable[dict]) -> None:
    """Refuse a restriction that names an attribute no table has (DataJoint would ignore it)."""
    tables = [t() if isinstance(t, type) else t for t in tables]
    names = set().union(*(set(t.key_source.heading.names) for t in tables)) if tables else set()
    for restriction in restrictions:
        unknown = sorted(set(restriction) - names)
        if unknown:
            raise ValueError(
                f"restriction {restriction}: no attribute {', '.join(unknown)} in the keys of "
                f"{', '.join(t.__class__.__name__ for t in tables)}; choose from {sorted(names)}"
            )


def _matches(table: Any, key: dict, restrictions: Iterable[dict]) -> bool:
    """Whether a job's key matches every restriction (all of whose attributes the table has).

    A restriction naming an attribute that the table's keys lack matches none of its jobs:
    DataJoint ignores unknown attributes, which would make it match all of them.
    """
    restrictions = list(restrictions)
    if not restrictions:
        return True
    source = table.key_source
    names = set(source.heading.names)
    if any(set(r) - names for r in restrictions):
        return False
    if not key:  # 0.14 error rows always carry their key; be safe with a malformed row
        return False
    return len(source & match(key) & dj.AndList([match(r) for r in restrictions])) > 0


def list_jobs(tables: Iterable[Any], status: str | None = None, restrictions: Iterable[dict] = ()) -> list[dict]:
    """Job rows (``reserved`` or ``error``, optionally one status) of the given tables.

    Each row is the jobs table's row plus, on both generations: ``table`` (class name),
    ``key`` (the populate key), ``host``, ``pid``, ``age_s`` (seconds since the job last
    changed, by the server's clock) and ``alive`` (whether the reserving process still runs:
    True/False on this host, None for another host or an error row). Only jobs whose key
    matches every restriction (a dict of key attributes) are listed.
    """
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {JOB_STATUSES}, not {status!r}")
    restrictions = list(restrictions)
    rows = []
    for table, jobs in _job_tables(tables):
        rows += _table_jobs(table, jobs, status, restrictions)
    return rows


def _table_jobs(table: Any, jobs: Any, status: str | None, restrictions: list[dict]) -> list[dict]:
    query = jobs & {"status": status} if status else jobs & "status in ('reserved', 'error')"
    found = fetch_dicts(query)
    now = _server_now(table.connection) if found else None
    rows = []
    for row in found:
        key = _job_key(row, jobs)
        if not _matches(table, key, restrictions):
            continue
        changed = _job_changed(row)
        reserved = row["status"] == "reserved"
        row.update(
            table=table.__class__.__name__,
            key=key,
            age_s=(now - changed).total_seconds() if changed is not None else None,
            alive=process_alive(row.get("host", ""), row.get("pid", 0)) if reserved else None,
        )
        rows.append(row)
    return rows


@dataclass
class ClearResult:
    """What ``clear_jobs`` did: rows removed, and live or uncheckable reservations kept."""

    removed: int = 0
    kept: list[dict] = field(default_factory=list)


def clear_jobs(
    tables: Iterable[Any], status: str = "error", restrictions: Iterable[dict] = (), *, force: bool = False
) -> ClearResult:
    """Delete job rows of a status ('error' or 'reserved') so their keys can run again.

    Only jobs matching every restriction are removed. A reservation is removed only when its
    process is known to be gone (same host, pid not running); one whose process is alive, or
    runs on another host where this cannot be checked, is kept unless ``force``: clearing a
    live reservation lets a second worker compute the same key.
    """
    if status not in JOB_STATUSES:
        raise ValueError(f"status must be 'error' or 'reserved', not {status!r}")
    restrictions = list(restrictions)
    result = ClearResult()
    for table, jobs in _job_tables(tables):
        for row in _table_jobs(table, jobs, status, restrictions):
            if status == "reserved" and row["alive"] is not False and not force:
                result.kept.append(row)
                continue
            # exactly the row listed: a job that changed meanwhile (a new reservation) stays
            exact = {k: row[k] for k in jobs.primary_key}
            query = jobs & exact & {"status": status, "pid": row["pid"]}
            result.removed += len(query)
            query.delete_quick()
    return result


def is_duplicate_error(error: BaseException | str) -> bool:
    """Whether a populate failure is (or was caused by) a duplicate-key insert.

    That happens when another worker inserted the same key meanwhile (its reservation had
    been cleared). 2.x then fails to record the error on the vanished job row, raising a
    DataJointError whose context is the DuplicateError; 0.14 returns "DuplicateError: ...".
    """
    if isinstance(error, str):
        return error.startswith("DuplicateError")
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, dj.errors.DuplicateError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def clear_job(table: Any, key: dict, status: str = "error") -> int:
    """Remove the job row of one populate key with this status; returns rows removed."""
    table = table() if isinstance(table, type) else table
    ((_, jobs),) = _job_tables([table])
    if IS_DJ2:
        query = jobs & {k: key[k] for k in jobs.primary_key}
    else:
        from datajoint.hash import key_hash

        query = jobs & {"key_hash": key_hash(table._job_key(key))}
    query = query & {"status": status}
    n = len(query)
    query.delete_quick()
    return n
