"""What ``elp app`` serves and to whom: the data roots, the address, the token.

Nothing outside the roots is read or written. The server binds 127.0.0.1 unless told
otherwise; any other address demands a token on every request (one is generated and printed
when none is given), because a lab server's port is reachable by everyone on its network.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

LOOPBACK_NAMES = ("localhost",)
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 64


class AppSettingsError(ElpError):
    """The app cannot start with these settings; the message names the option."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AppSettings:
    """The checked settings of one app server."""

    roots: tuple[Path, ...]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20

    @classmethod
    def build(
        cls,
        roots: Sequence[PathLike],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    ) -> tuple[AppSettings, bool]:
        """Checked settings, and whether a token was generated (to print it once).

        Every root must be an existing folder; they are kept resolved. A host other than
        loopback without a token gets a generated one.
        """
        if not roots:
            raise AppSettingsError("--root: give at least one folder the app may read and write")
        resolved = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise AppSettingsError(f"--root {root}: not an existing folder")
            resolved.append(path.resolve())
        if not 0 < int(port) < 65536:
            raise AppSettingsError(f"--port {port}: not a TCP port (1-65535)")
        if token is not None and (len(token) < 16 or not token.isprintable() or " " in token):
            raise AppSettingsError("--token: at least 16 printable characters without spaces")
        if not 0 < max_upload_mb <= 16 * 1024:
            raise AppSettingsError(f"--max-upload-mb {max_upload_mb}: between 0 and 16384")
        generated = token is None and not is_loopback(host)
        if generated:
            token = secrets.token_urlsafe(24)
        settings = cls(tuple(resolved), host, int(port), token, int(max_upload_mb * 2**20))
        return settings, generated
