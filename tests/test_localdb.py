"""The local database launcher's credential files, without a server (see
tests/pipeline/test_localdb_security.py for the servers themselves)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from element_lightning_pose import localdb

CREDENTIAL_FILES = ("connection.json", "dj_local_conf.json", "env.sh")

# An audit hook cannot be removed, so one hook for the process, switched by this list: while
# it holds a directory, every chmod of a file there records the mode the file had just before.
_WATCHED: list[Path] = []
_MODES_BEFORE_CHMOD: list[tuple[str, int]] = []


def _record_mode_before_chmod(event: str, args: tuple) -> None:
    if event != "os.chmod" or not _WATCHED or not isinstance(args[0], (str, os.PathLike)):
        return
    path = Path(args[0])
    if path.parent == _WATCHED[0] and path.is_file():
        _MODES_BEFORE_CHMOD.append((path.name, stat.S_IMODE(path.stat().st_mode)))


sys.addaudithook(_record_mode_before_chmod)


def test_credential_files_are_never_readable_by_others(tmp_path):
    """Created 0600, not created 0644 and narrowed afterwards; no temporary left behind."""
    conn = localdb.Connection("mysql", "127.0.0.1", 3399, "elp", "s3cret-pw", 1234, str(tmp_path))
    _MODES_BEFORE_CHMOD.clear()
    old_mask = os.umask(0o022)
    _WATCHED.append(tmp_path)
    try:
        localdb._write_state(tmp_path, conn)
    finally:
        _WATCHED.clear()
        os.umask(old_mask)
    assert _MODES_BEFORE_CHMOD, "the files were expected to get their final mode by chmod"
    widened = [(name, oct(mode)) for name, mode in _MODES_BEFORE_CHMOD if mode & 0o077]
    assert widened == [], f"readable by others before the chmod: {widened}"
    for name in CREDENTIAL_FILES:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CREDENTIAL_FILES)
    assert "s3cret-pw" in (tmp_path / "env.sh").read_text()
