"""``elp app``: the browser app on one port (127.0.0.1 unless told otherwise, then with a token)."""

from __future__ import annotations

import argparse
import sys

from element_lightning_pose.app.settings import DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, AppSettings


def configure_parser(parser: argparse.ArgumentParser, command: str = "app") -> None:
    parser.add_argument(
        "--root",
        action="append",
        required=True,
        metavar="DIR",
        help="a folder the app may read and write (projects, videos, models); repeat for several",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--token",
        help="token every request must carry; generated and printed when --host is not loopback and none is given",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest request body (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from element_lightning_pose.app.server import create_app
    except ImportError as exc:
        print(f'elp app: needs the app extra: pip install "element-lightning-pose[app]" ({exc})', file=sys.stderr)
        return 2
    settings, generated = AppSettings.build(
        args.root, host=args.host, port=args.port, token=args.token, max_upload_mb=args.max_upload_mb
    )
    address = f"http://{'[' + settings.host + ']' if ':' in settings.host else settings.host}:{settings.port}/"
    if settings.token:
        print(
            f"elp app: open {address}?token={settings.token}" + (" (token generated for this run)" if generated else "")
        )
    else:
        print(f"elp app: open {address}  (this machine only)")
    print("elp app: folders: " + ", ".join(str(root) for root in settings.roots))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    return 0
