"""What `elp db start` secures, tested against the real servers it starts.

Each backend's server is started once per module, in a private folder on a free port, with
the `elp db` command a user runs. The MariaDB tests run in the MariaDB group of the test
command, the PostgreSQL ones in the PostgreSQL group (``DJ_BACKEND`` names the group; with
no ``DJ_BACKEND`` both run). Without the server binaries they are skipped, except in CI
(``CI=true``) or with ``ELP_REQUIRE_DB=1``, where the binaries must be there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from element_lightning_pose import localdb
from tests.conftest import CHILD_PYTHONPATH

REQUIRE_DB = any(os.environ.get(var, "").lower() in {"1", "true", "yes"} for var in ("CI", "ELP_REQUIRE_DB"))
IS_ROOT = os.geteuid() == 0
CAN_SWITCH_USER = IS_ROOT and shutil.which("runuser") is not None


def elp_db(*args: str) -> subprocess.CompletedProcess:
    """Run `elp db ARGS` as a user would, capturing what it prints."""
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH)
    return subprocess.run(
        [sys.executable, "-m", "element_lightning_pose.cli", "db", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_server(backend: str) -> None:
    """Skip unless this group tests ``backend`` and its binaries exist (in CI they must)."""
    selected = os.environ.get("DJ_BACKEND")
    if selected and selected != backend:
        pytest.skip(f"the {backend} launcher is tested in the {backend} group (DJ_BACKEND={selected})")
    if not localdb.server_installed(backend):
        message = f"the {backend} server binaries are not installed"
        if REQUIRE_DB:
            pytest.fail(message)
        pytest.skip(message)


class Server:
    """A server started by `elp db start` in a private folder, and what the start printed."""

    def __init__(self, backend: str):
        self.backend = backend
        # In /tmp, not pytest's 0700 folder: PostgreSQL runs as `postgres` when we are root.
        self.root = Path(tempfile.mkdtemp(prefix=f"elp-dbsec-{backend}-"))
        self.dir = self.root / backend
        self.port = free_port()
        self.first_start = self.cli("start", "--port", str(self.port))
        assert self.first_start.returncode == 0, self.first_start.stderr

    def cli(self, action: str, *extra: str) -> subprocess.CompletedProcess:
        return elp_db(action, "--backend", self.backend, "--dir", str(self.dir), *extra)

    @property
    def password(self) -> str:
        return json.loads((self.dir / "connection.json").read_text())["password"]

    def close(self) -> None:
        self.cli("stop")
        shutil.rmtree(self.root, ignore_errors=True)


def exported(cli_output: str) -> dict[str, str]:
    """The variables of `export KEY=VALUE` lines."""
    lines = [line.removeprefix("export ") for line in cli_output.splitlines() if line.startswith("export ")]
    return dict(line.split("=", 1) for line in lines)


# --------------------------------------------------------------------------- MariaDB


@pytest.fixture(scope="module")
def mariadb():
    require_server("mysql")
    server = Server("mysql")
    yield server
    server.close()


def mariadb_client(
    *args: str,
    password: str | None = None,
    as_user: str | None = None,
) -> subprocess.CompletedProcess:
    """The mariadb client with no option files; the password, if any, via MYSQL_PWD."""
    client = localdb._mysql_binaries()[2]
    env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}
    if password is not None:
        env["MYSQL_PWD"] = password
    prefix = ["runuser", "-u", as_user, "--"] if as_user else []
    return subprocess.run(
        [*prefix, client, "--no-defaults", "-N", "-B", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def as_elp(server: Server, sql: str) -> list[list[str]]:
    """Rows of ``sql`` run as the elp user over TCP, with the settings `elp db env` prints."""
    env = exported(server.cli("env").stdout)
    result = mariadb_client(
        "-h", env["DJ_HOST"], "-P", env["DJ_PORT"], "-u", env["DJ_USER"], "-e", sql, password=env["DJ_PASS"]
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_mariadb_root_without_password_over_tcp_is_refused(mariadb):
    result = mariadb_client("-h", "127.0.0.1", "-P", str(mariadb.port), "-u", "root", "-e", "SELECT 1")
    assert result.returncode != 0
    assert "Access denied" in result.stderr


@pytest.mark.skipif(not CAN_SWITCH_USER, reason="needs root and runuser to act as another account")
def test_mariadb_another_account_gets_no_root(mariadb):
    """The OS account `nobody` gets in neither over TCP nor through the socket."""
    tcp = mariadb_client("-h", "127.0.0.1", "-P", str(mariadb.port), "-u", "root", "-e", "SELECT 1", as_user="nobody")
    assert tcp.returncode != 0 and "Access denied" in tcp.stderr
    sock = mariadb_client(f"--socket={mariadb.dir / 'mysql.sock'}", "-u", "root", "-e", "SELECT 1", as_user="nobody")
    assert sock.returncode != 0


def test_mariadb_elp_user_from_env_works(mariadb):
    assert as_elp(mariadb, "SELECT CURRENT_USER()") == [["elp@%"]]


def test_mariadb_has_no_anonymous_or_remote_root_account(mariadb):
    accounts = as_elp(mariadb, "SELECT User, Host, plugin FROM mysql.user ORDER BY User, Host")
    assert [a for a in accounts if a[0] == ""] == []
    assert [a for a in accounts if a[0] == "root"] == [["root", "localhost", "unix_socket"]]


def test_mariadb_socket_is_not_world_writable(mariadb):
    sock = mariadb.dir / "mysql.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) & 0o002 == 0
    assert stat.S_IMODE(mariadb.dir.stat().st_mode) & 0o077 == 0  # nor its folder enterable


def test_mariadb_start_never_prints_the_password(mariadb):
    again = mariadb.cli("start")  # already running
    assert again.returncode == 0, again.stderr
    for result in (mariadb.first_start, again):
        assert mariadb.password not in result.stdout + result.stderr
        assert str(mariadb.dir / "env.sh") in result.stdout
    # `elp db env` is the explicit way to get the lines (scripts/setup.sh evals it)
    assert exported(mariadb.cli("env").stdout)["DJ_PASS"] == mariadb.password


def test_mariadb_credential_files_are_private(mariadb):
    for name in ("connection.json", "dj_local_conf.json", "env.sh"):
        assert stat.S_IMODE((mariadb.dir / name).stat().st_mode) == 0o600, name
    hidden = [p.name for p in mariadb.dir.iterdir() if p.name.startswith(".")]
    assert hidden == []  # no temporary, no init file with the password


def _make_insecure_like_an_old_data_dir(server: Server) -> None:
    """What the old launcher left: passwordless root everywhere, an anonymous account."""
    sql = (
        "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('');"
        "CREATE USER 'root'@'127.0.0.1'; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
        "CREATE USER 'root'@'oldhostname'; CREATE USER ''@'localhost';"
    )
    result = mariadb_client(f"--socket={server.dir / 'mysql.sock'}", "-u", "root", "-e", sql)
    assert result.returncode == 0, result.stderr
    server.dir.chmod(0o755)
    open_root = mariadb_client("-h", "127.0.0.1", "-P", str(server.port), "-u", "root", "-e", "SELECT 1")
    assert open_root.returncode == 0, "the old insecure state could not be reproduced"


def _assert_secure(server: Server) -> None:
    test_mariadb_root_without_password_over_tcp_is_refused(server)
    test_mariadb_has_no_anonymous_or_remote_root_account(server)
    assert stat.S_IMODE(server.dir.stat().st_mode) & 0o077 == 0


@pytest.mark.skipif(not IS_ROOT, reason="reproducing an old data dir needs root's socket login")
def test_mariadb_old_running_server_is_secured_by_start(mariadb):
    _make_insecure_like_an_old_data_dir(mariadb)
    result = mariadb.cli("start")
    assert result.returncode == 0, result.stderr
    _assert_secure(mariadb)


@pytest.mark.skipif(not IS_ROOT, reason="reproducing an old data dir needs root's socket login")
def test_mariadb_old_data_dir_is_secured_on_restart(mariadb):
    _make_insecure_like_an_old_data_dir(mariadb)
    assert mariadb.cli("stop").returncode == 0
    result = mariadb.cli("start")
    assert result.returncode == 0, result.stderr
    _assert_secure(mariadb)
    assert mariadb.password not in result.stdout + result.stderr
    test_mariadb_elp_user_from_env_works(mariadb)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres():
    require_server("postgresql")
    server = Server("postgresql")
    yield server
    server.close()


def psql(server: Server, user: str, password: str | None = None) -> subprocess.CompletedProcess:
    """``SELECT 1`` over TCP as ``user``; never prompts (-w), no ~/.pgpass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    if password is not None:
        env["PGPASSWORD"] = password
    binary = localdb._postgres_bindir() / "psql"
    return subprocess.run(
        [
            str(binary),
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            user,
            "-d",
            "postgres",
            "-Atc",
            "SELECT current_user",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("user", ["elp", "postgres", "root"])
def test_postgres_refuses_a_login_without_password_over_tcp(postgres, user):
    result = psql(postgres, user)
    assert result.returncode != 0
    assert "password" in result.stderr


def test_postgres_elp_user_with_its_password_works(postgres):
    result = psql(postgres, "elp", password=postgres.password)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "elp"


def test_postgres_start_never_prints_the_password(postgres):
    again = postgres.cli("start")
    assert again.returncode == 0, again.stderr
    for result in (postgres.first_start, again):
        assert postgres.password not in result.stdout + result.stderr
    for name in ("connection.json", "dj_local_conf.json", "env.sh"):
        assert stat.S_IMODE((postgres.dir / name).stat().st_mode) == 0o600, name
    assert not (postgres.dir / ".pw").exists()
