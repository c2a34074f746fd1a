"""``elp db start|stop|status|env``: a private database server on 127.0.0.1 (see :mod:`localdb`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from element_lightning_pose import localdb
from element_lightning_pose.engine.atomic import check_output


def configure_parser(parser: argparse.ArgumentParser, command: str = "db") -> None:
    parser.add_argument(
        "action", choices=["start", "stop", "status", "env"], help="env prints the export lines for a running server"
    )
    parser.add_argument("--backend", choices=localdb.BACKENDS, default="postgresql")
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: %(default)s → per backend)")
    parser.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1")
    parser.add_argument("--install", action="store_true", help="apt-get install the server if it is missing")


def _location(args: argparse.Namespace) -> str:
    """The options that name this server again, for the hint printed by ``start``."""
    text = f" --backend {args.backend}"
    if args.dir:
        text += f" --dir {Path(args.dir).absolute()}"
    return text


def _describe(conn: localdb.Connection) -> str:
    return f"{conn.backend} running on {conn.host}:{conn.port} (pid {conn.pid}), data in {conn.data_dir}"


def run(args: argparse.Namespace) -> int:
    data_dir = args.dir or localdb.default_dir(args.backend)
    if args.action == "start":
        check_output(data_dir, folder=True, what="--dir")
        conn = localdb.start(args.backend, data_dir, args.port, args.install)
        print(_describe(conn))
        # Never the password: stdout ends up in scrollback and CI logs. `elp db env` is the
        # explicit way to get the export lines.
        env_file = Path(conn.data_dir) / localdb.ENV_FILE
        print(
            f"connection settings (DJ_*, with the password) in {env_file} (mode 0600): "
            f'`source {env_file}`, or `eval "$(elp db env{_location(args)})"`'
        )
    elif args.action == "stop":
        conn = localdb.stop(args.backend, data_dir)
        print(f"stopped {conn.backend} (pid {conn.pid}) in {conn.data_dir}")
    else:
        found = localdb.status(args.backend, data_dir)
        if found is None:
            print(f"no {args.backend} server of elp running in {Path(data_dir).absolute()}", file=sys.stderr)
            return 1
        if args.action == "env":
            for key, value in found.env().items():
                print(f"export {key}={value}")
        else:
            print(_describe(found))
    return 0
