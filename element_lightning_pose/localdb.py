"""A private database server on 127.0.0.1 for the demo, the tests and laptops.

``elp db start`` initialises a data directory, starts PostgreSQL 15 or MariaDB as an ordinary
background process listening on loopback only, creates a user with a password, waits until
it accepts connections, and writes the connection settings next to the data:

- ``<dir>/connection.json``: backend, host, port, user, password, pid
- ``<dir>/env.sh``: ``export DJ_HOST=... DJ_USER=... DJ_PASS=... DJ_PORT=... DJ_BACKEND=...``
- ``<dir>/dj_local_conf.json``: a DataJoint config file with the same settings

The three files hold the password and are created 0600; ``start`` prints where they are,
never the password (``elp db env`` prints the export lines on request). MariaDB keeps no
passwordless account: root only through ``unix_socket`` over a socket in the 0700 data folder,
no anonymous or remote root; the accounts are set by SQL the server runs on every start
before its first connection, so a data folder made by an older elp is secured too.

``start`` on a running server only reports it (a MariaDB one is secured first); ``stop``
stops the server whose pid it wrote and nothing else. Users with a lab server skip this
module and set ``DJ_HOST`` / ``DJ_USER`` / ``DJ_PASS`` (and ``DJ_BACKEND``, ``DJ_PORT``) as
DataJoint expects.

PostgreSQL refuses to run as root; when started by root the server runs as the ``postgres``
system account (created by Debian's package) and the data directory belongs to it.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from element_lightning_pose.engine.atomic import pid_alive, write_text_atomic
from element_lightning_pose.engine.errors import ElpError

BACKENDS = ("postgresql", "mysql")
DEFAULT_PORTS = {"postgresql": 15432, "mysql": 13306}
APT_PACKAGES = {"postgresql": "postgresql", "mysql": "mariadb-server"}
DB_USER = "elp"
STATE_FILE = "connection.json"
ENV_FILE = "env.sh"
SECRET_MODE = 0o600  # every file holding the password


class LocalDBError(ElpError, RuntimeError):
    """The local server could not be set up, started or stopped; the message says why."""


@dataclass
class Connection:
    """How to reach a server: the values DataJoint needs."""

    backend: str
    host: str
    port: int
    user: str
    password: str
    pid: int | None = None
    data_dir: str | None = None

    def env(self) -> dict[str, str]:
        """Environment variables understood by DataJoint 0.14 and 2.x (and by our tests)."""
        return {
            "DJ_HOST": self.host,
            "DJ_PORT": str(self.port),
            "DJ_USER": self.user,
            "DJ_PASS": self.password,
            "DJ_BACKEND": self.backend,
            "DJ_USE_TLS": "false",  # a loopback server has no certificate
        }

    def dj_config(self) -> dict:
        """A DataJoint config file's content for this server."""
        return {
            "database.host": self.host,
            "database.port": self.port,
            "database.user": self.user,
            "database.password": self.password,
            "database.backend": self.backend,
            "database.use_tls": False,
        }


# --------------------------------------------------------------------------- locations


def default_dir(backend: str) -> Path:
    """Where a backend's data live unless ``--dir`` or ``ELP_DB_DIR`` says otherwise.

    Root's home is usually closed to other accounts, and PostgreSQL must run as one, so root
    keeps its servers under /var/lib/elp.
    """
    base = os.environ.get("ELP_DB_DIR")
    if base:
        return Path(base) / backend
    if os.geteuid() == 0:
        return Path("/var/lib/elp/db") / backend
    return Path.home() / ".elp" / "db" / backend


def _postgres_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _mysql_binaries() -> tuple[str, str, str] | None:
    server = shutil.which("mariadbd") or shutil.which("mysqld")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    client = shutil.which("mariadb") or shutil.which("mysql")
    if server is None:
        for path in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"):
            if Path(path).exists():
                server = path
                break
    if server and install and client:
        return server, install, client
    return None


def server_installed(backend: str) -> bool:
    return (_postgres_bindir() if backend == "postgresql" else _mysql_binaries()) is not None


def install_server(backend: str) -> None:
    """Install the server package with apt-get (only when the user asked for it)."""
    package = APT_PACKAGES[backend]
    if shutil.which("apt-get") is None:
        raise LocalDBError(f"apt-get not found: install {package} with your package manager")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        subprocess.run(prefix + cmd, check=True, env=env)


def _require_installed(backend: str, install: bool) -> None:
    if server_installed(backend):
        return
    if install:
        install_server(backend)
        if server_installed(backend):
            return
    raise LocalDBError(
        f"the {backend} server binaries are not installed. Install them with\n"
        f"    sudo apt-get update && sudo apt-get install -y {APT_PACKAGES[backend]}\n"
        f"or run `elp db start --backend {backend} --install` to let elp do it."
    )


# --------------------------------------------------------------------------- helpers


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def _mysql_greets(port: int, timeout: float = 0.5) -> bool:
    """Whether a MySQL server on 127.0.0.1 sends its greeting. An open port alone is not
    enough: the kernel accepts connections as soon as the server listens, before it has run
    its ``--init-file``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
            return len(sock.recv(4)) > 0
        except OSError:
            return False


def _pid_alive(pid: int | None) -> bool:
    if not pid or not pid_alive(pid):
        return False
    # A zombie (exited child not yet reaped) is not a running server.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def read_state(data_dir: Path) -> Connection | None:
    path = Path(data_dir) / STATE_FILE
    if not path.is_file():
        return None
    return Connection(**json.loads(path.read_text()))


def _write_state(data_dir: Path, conn: Connection) -> None:
    """Write the three credential files, each created 0600 and replaced atomically."""
    data_dir = Path(data_dir)
    for name, text in (
        (STATE_FILE, json.dumps(asdict(conn), indent=2)),
        ("dj_local_conf.json", json.dumps(conn.dj_config(), indent=2)),
        (ENV_FILE, "".join(f"export {k}={v}\n" for k, v in conn.env().items())),
    ):
        write_text_atomic(data_dir / name, text, mode=SECRET_MODE)


def _run_as(user: str | None, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _wait_until(predicate, timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = ""
    if log and log.exists():
        tail = "\n--- last lines of " + str(log) + " ---\n" + "\n".join(log.read_text().splitlines()[-15:])
    raise LocalDBError(f"{what} did not happen within {timeout:.0f} s{tail}")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LocalDBError(
            "PostgreSQL cannot run as root and there is no 'postgres' account; "
            "install the postgresql package or run elp as an ordinary user"
        ) from exc
    return "postgres"


def _start_postgres(data_dir: Path, port: int, password: str) -> int:
    bindir = _postgres_bindir()
    user = _pg_service_user()
    pgdata = data_dir / "pgdata"
    log = data_dir / "server.log"
    if user:
        # Every parent must be traversable by the service account.
        for parent in [data_dir, *data_dir.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                if parent == data_dir or str(parent).startswith(("/var/lib/elp", "/tmp", "/var/tmp")):
                    parent.chmod(mode | 0o011)
                else:
                    raise LocalDBError(
                        f"{parent} is not readable by the 'postgres' account that must run the "
                        f"server; choose another --dir (e.g. /var/lib/elp/db/postgresql)"
                    )
        shutil.chown(data_dir, user=user)
    if not (pgdata / "PG_VERSION").exists():
        pwfile = write_text_atomic(data_dir / ".pw", password + "\n", mode=SECRET_MODE)
        if user:
            shutil.chown(pwfile, user=user)
        result = _run_as(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise LocalDBError(f"initdb failed in {pgdata}:\n{result.stderr.strip()}")
    if user:
        subprocess.run(["chown", "-R", f"{user}:", str(data_dir)], check=True)
    options = f"-p {port} -h 127.0.0.1 -k {data_dir}"
    result = _run_as(
        user,
        [str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
    )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:]) if log.exists() else ""
        raise LocalDBError(f"PostgreSQL did not start on port {port}:\n{result.stdout}{result.stderr}\n{tail}")
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return pid


def _stop_postgres(data_dir: Path) -> None:
    bindir = _postgres_bindir()
    result = _run_as(
        _pg_service_user(), [str(bindir / "pg_ctl"), "-D", str(data_dir / "pgdata"), "-m", "fast", "-w", "stop"]
    )
    if result.returncode != 0:
        raise LocalDBError(f"pg_ctl stop failed for {data_dir}:\n{result.stderr.strip()}")


# --------------------------------------------------------------------------- MariaDB / MySQL


def _sql_string(value: str) -> str:
    """``value`` as a quoted SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mysql_hardening_sql(password: str) -> str:
    """The accounts a private server keeps, as SQL run on every start (idempotent).

    Removed: anonymous accounts and root at any host but localhost (an old data directory,
    initialised with ``--auth-root-authentication-method=normal``, has a passwordless root
    at 127.0.0.1, ::1 and the host name, and anonymous users). root@localhost is reachable
    only through the 0700 socket and only by the OS account of the same name (unix_socket).
    The ``elp`` user is the one way in over TCP, with the password of connection.json.
    The DELETEs are those of mariadb-secure-installation; they also catch host names that
    an old data directory recorded under another host name.
    """
    unwanted = "User = '' OR (User = 'root' AND Host <> 'localhost')"
    pw = _sql_string(password)
    statements = [
        f"DELETE FROM mysql.global_priv WHERE {unwanted}",
        f"DELETE FROM mysql.proxies_priv WHERE {unwanted}",
        f"DELETE FROM mysql.db WHERE {unwanted}",
        f"DELETE FROM mysql.tables_priv WHERE {unwanted}",
        f"DELETE FROM mysql.columns_priv WHERE {unwanted}",
        f"DELETE FROM mysql.procs_priv WHERE {unwanted}",
        "FLUSH PRIVILEGES",
        "ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED VIA unix_socket",
        f"DROP USER IF EXISTS '{DB_USER}'@'localhost'",  # the old code's second elp; '%' covers it
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY {pw}",
        f"ALTER USER '{DB_USER}'@'%' IDENTIFIED BY {pw}",
        f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'%' WITH GRANT OPTION",
    ]
    return "".join(statement + ";\n" for statement in statements)


def _start_mysql(data_dir: Path, port: int, password: str) -> int:
    server, install, _ = _mysql_binaries()
    datadir = data_dir / "mysqldata"
    # The socket lives in the data folder, which only the server's account may enter: the
    # server makes the socket itself 0777.
    data_dir.chmod(0o700)
    sock = data_dir / "mysql.sock"
    log = data_dir / "server.log"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    if not (datadir / "mysql").exists():
        # socket: root@localhost (and the OS account's own, when not root) via unix_socket only
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                *as_root,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalDBError(f"{install} failed in {datadir}:\n{result.stderr.strip()[-2000:]}")
    # The server runs this before it serves any connection, so an old data directory's
    # passwordless root is gone before anyone can use it; the file holds the password and
    # is removed once the server is up.
    init_file = write_text_atomic(data_dir / ".init.sql", _mysql_hardening_sql(password), mode=SECRET_MODE)
    cmd = [
        server,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        f"--socket={sock}",
        f"--pid-file={data_dir / 'server.pid'}",
        f"--log-error={log}",
        f"--init-file={init_file}",
        "--skip-name-resolve",
        "--character-set-server=utf8mb4",
        *as_root,
    ]
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_until(
            lambda: sock.exists() and _mysql_greets(port) or proc.poll() is not None,
            60,
            f"MariaDB accepting connections on port {port}",
            log,
        )
    finally:
        init_file.unlink(missing_ok=True)
    if proc.poll() is not None:
        tail = "\n".join(log.read_text().splitlines()[-15:]) if log.exists() else ""
        raise LocalDBError(f"MariaDB exited with code {proc.returncode} while starting:\n{tail}")
    sock.chmod(0o600)
    problem = _mysql_insecurity(port, password)
    if problem:
        _stop_mysql(proc.pid)
        raise LocalDBError(f"MariaDB in {data_dir} was stopped: {problem} (see {log})")
    return proc.pid


UNSAFE_ACCOUNTS_SQL = (
    "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user WHERE User = '' OR "
    "(User = 'root' AND (Host <> 'localhost' OR plugin <> 'unix_socket'))"
)


def _mysql_insecurity(port: int, password: str) -> str | None:
    """Why the server is not as the hardening SQL leaves it, or None: the server goes on
    after a failed ``--init-file`` statement, so check the result, as the ``elp`` user over TCP."""
    client = _mysql_binaries()[2]
    # The password goes through the environment, not the command line that `ps` shows.
    result = subprocess.run(
        [
            client,
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            str(port),
            "-u",
            DB_USER,
            "-N",
            "-B",
            "-e",
            UNSAFE_ACCOUNTS_SQL,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, MYSQL_PWD=password),
        check=False,
    )
    if result.returncode != 0:
        return f"the '{DB_USER}' user cannot log in over TCP: {result.stderr.strip()}"
    unsafe = result.stdout.split()
    if unsafe:
        return f"accounts that should have been removed or restricted remain: {', '.join(unsafe)}"
    return None


def _secure_running_mysql(data_dir: Path, port: int, password: str) -> None:
    """Apply the hardening to a server that is already running (one an older elp started
    with a passwordless root): through the socket as root, where root can log in."""
    binaries = _mysql_binaries()
    data_dir.chmod(0o700)
    sock = data_dir / "mysql.sock"
    if binaries is None or not sock.exists():
        return
    client = binaries[2]
    sock.chmod(0o600)
    # New servers: root via unix_socket, so this works when elp runs as root and is refused
    # otherwise, which is fine: such a server was hardened when it started.
    subprocess.run(
        [client, "--no-defaults", f"--socket={sock}", "-u", "root"],
        input=_mysql_hardening_sql(password),
        capture_output=True,
        text=True,
        check=False,
    )
    problem = _mysql_insecurity(port, password)
    if problem:
        raise LocalDBError(
            f"the MariaDB server running in {data_dir} is not secured: {problem}. Restart it "
            f"(elp db stop --backend mysql --dir {data_dir}, then start) to secure it"
        )


def _stop_mysql(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    _wait_until(lambda: not _pid_alive(pid), 60, f"MariaDB (pid {pid}) stopping", None)


# --------------------------------------------------------------------------- public API


def status(backend: str = "postgresql", data_dir: Path | None = None) -> Connection | None:
    """The running server's connection, or None when no server of ours runs in ``data_dir``."""
    data_dir = Path(data_dir or default_dir(backend))
    conn = read_state(data_dir)
    if conn and _pid_alive(conn.pid) and _port_open(conn.host, conn.port):
        return conn
    return None


def start(
    backend: str = "postgresql",
    data_dir: Path | None = None,
    port: int | None = None,
    install: bool = False,
) -> Connection:
    """Start (or find running) a private server; returns how to connect to it."""
    if backend not in BACKENDS:
        raise LocalDBError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    data_dir = Path(data_dir or default_dir(backend)).absolute()
    running = status(backend, data_dir)
    if running:
        if backend == "mysql":
            _secure_running_mysql(data_dir, running.port, running.password)
        return running
    _require_installed(backend, install)
    previous = read_state(data_dir)
    port = port or (previous.port if previous else DEFAULT_PORTS[backend])
    if _port_open("127.0.0.1", port):
        raise LocalDBError(
            f"port {port} on 127.0.0.1 is already in use by another program; "
            f"choose another with --port (our {backend} data dir: {data_dir})"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    password = previous.password if previous else secrets.token_urlsafe(18)
    starter = _start_postgres if backend == "postgresql" else _start_mysql
    pid = starter(data_dir, port, password)
    conn = Connection(backend, "127.0.0.1", port, DB_USER, password, pid, str(data_dir))
    _write_state(data_dir, conn)
    return conn


def stop(backend: str = "postgresql", data_dir: Path | None = None) -> Connection:
    """Stop the server that ``start`` launched in ``data_dir`` (identified by its pid file)."""
    data_dir = Path(data_dir or default_dir(backend)).absolute()
    conn = read_state(data_dir)
    if conn is None or not _pid_alive(conn.pid):
        raise LocalDBError(f"no {backend} server started by elp is running in {data_dir}")
    if conn.backend == "postgresql":
        _stop_postgres(data_dir)
    else:
        _stop_mysql(conn.pid)
    return conn
