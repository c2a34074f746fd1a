"""Helpers for tests that run real workers (subprocesses) against the real database server.

``TableLock`` holds a real table lock from a second connection, so that a worker reaches a
chosen point of its make and waits there, on any device: no timing guesses, no mocks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from element_lightning_pose import dj_compat


def worker_command(lp, lp_root, *extra: str) -> list[str]:
    root, _ = lp_root
    return [
        sys.executable,
        "-m",
        "element_lightning_pose.cli",
        "worker",
        "--prefix",
        lp.prefix,
        "--root-dir",
        str(root),
        "--processed-dir",
        str(root / "processed"),
        *extra,
    ]


def jobs_command(lp, lp_root, *extra: str) -> list[str]:
    cmd = worker_command(lp, lp_root)
    cmd[cmd.index("worker")] = "jobs"
    return cmd + list(extra)


def add_recording(lp, session: dict, recording_id: int, video_rel: str) -> dict:
    rec = {**session, "recording_id": recording_id}
    lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
    lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video_rel})
    return rec


def reservations(lp, table, recording_id: int) -> list[dict]:
    """Reserved jobs of ``table`` for one recording (both generations: the normalised rows)."""
    return [row for row in dj_compat.list_jobs([table], "reserved") if int(row["key"]["recording_id"]) == recording_id]


def wait_for(condition: Callable[[], bool], what: str, proc=None, timeout: float = 180.0) -> None:
    """Poll ``condition`` until true; fail if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"worker exited (rc {proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.2)


def _raw_connection():
    """A second connection to the server the DJ_* variables name (not DataJoint's)."""
    import datajoint as dj

    env = os.environ
    if dj_compat.backend() == "postgresql":
        import psycopg2

        dbname = dj.conn().query("SELECT current_database()").fetchone()[0]
        return psycopg2.connect(
            host=env["DJ_HOST"],
            port=int(env.get("DJ_PORT", 5432)),
            user=env["DJ_USER"],
            password=env["DJ_PASS"],
            dbname=dbname,
            sslmode="disable",
        )
    import pymysql

    host, _, port = env["DJ_HOST"].partition(":")
    return pymysql.connect(
        host=host,
        port=int(env.get("DJ_PORT") or port or 3306),
        user=env["DJ_USER"],
        password=env["DJ_PASS"],
        autocommit=True,
    )


class TableLock:
    """Hold a real lock on ``table`` from a second connection until released.

    ``blocks="writes"``: other sessions may read but their INSERT/UPDATE/DELETE waits
    (PostgreSQL ``SHARE`` mode, MySQL ``LOCK TABLES ... READ``). ``blocks="all"``: their
    reads wait too (``ACCESS EXCLUSIVE``, ``LOCK TABLES ... WRITE``). On PostgreSQL even
    loading the table's heading reads it, so a process must have activated its schemas
    before an ``"all"`` lock is taken.
    """

    def __init__(self, table, blocks: str = "writes") -> None:
        assert blocks in ("writes", "all")
        self.database, self.table_name = table.database, table.table_name
        self.name = table.full_table_name
        self.blocks = blocks
        self.conn = None

    def __enter__(self) -> TableLock:
        self.conn = _raw_connection()
        cursor = self.conn.cursor()
        if dj_compat.backend() == "postgresql":
            mode = "SHARE" if self.blocks == "writes" else "ACCESS EXCLUSIVE"
            cursor.execute(f"LOCK TABLE {self.name} IN {mode} MODE")  # opens a transaction
        else:
            cursor.execute(f"LOCK TABLES {self.name} {'READ' if self.blocks == 'writes' else 'WRITE'}")
        return self

    def release(self) -> None:
        if self.conn is None:
            return
        if dj_compat.backend() == "postgresql":
            self.conn.rollback()
        else:
            self.conn.cursor().execute("UNLOCK TABLES")
        self.conn.close()
        self.conn = None

    def __exit__(self, *exc) -> None:
        self.release()

    def waiters(self) -> int:
        """Sessions now waiting for this lock (read from the catalog: no lock of our own)."""
        import datajoint as dj

        if dj_compat.backend() == "postgresql":
            sql = (
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s)"
            )
            args = (self.database, self.table_name)
        else:
            sql = (
                "SELECT count(*) FROM information_schema.PROCESSLIST "
                "WHERE STATE LIKE 'Waiting for table metadata lock%%' AND INFO LIKE %s"
            )
            args = (f"%{self.table_name}%",)
        return int(dj.conn().query(sql, args=args).fetchone()[0])
