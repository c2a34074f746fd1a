"""Where a request may point: a root of the app and a path inside it, written ``<root>:<path>``.

Every path a page or an API call names is one of these keys, resolved here and only here: the
root is one of the app's roots (by its index), the path is relative, and the resolved target
(``..`` and symbolic links followed) must lie inside that root
(:func:`element_lightning_pose.engine.safe_paths.inside_root`). Files inside a project (images,
videos, models) are named relative to the project and checked against the project's root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.safe_paths import UnsafePathError, inside_root


@dataclass(frozen=True)
class Location:
    """A checked path inside one of the app's roots."""

    root_index: int
    relative: str  # POSIX, "" for the root itself
    path: Path  # root / relative (not resolved: what the user sees)
    root: Path

    @property
    def key(self) -> str:
        return f"{self.root_index}:{self.relative}"

    def child(self, relative: str, what: str = "path") -> Location:
        """A path inside this location (e.g. an image of a project), checked against the same root."""
        joined = str(PurePosixPath(self.relative, _relative_text(relative, what))) if self.relative else relative
        return _checked(self.root_index, self.root, joined, what)


def _relative_text(text: str, what: str) -> str:
    if not isinstance(text, str) or "\0" in text or "\\" in text:
        raise UnsafePathError(f"{what} {text!r}: not a relative path inside the app's roots")
    if text.startswith("/") or PurePosixPath(text).is_absolute():
        raise UnsafePathError(f"{what} {text!r}: absolute paths are not accepted; give it relative to its root")
    return text


def _checked(root_index: int, root: Path, relative: str, what: str) -> Location:
    relative = _relative_text(relative, what)
    path = inside_root(root, relative, what) if relative else root
    normal = PurePosixPath(relative).as_posix() if relative else ""
    return Location(root_index, "" if normal == "." else normal, path, root)


def locate(settings: AppSettings, key: str, what: str = "path") -> Location:
    """The location named by ``key`` (``"<root index>:<relative path>"``)."""
    root_text, sep, relative = str(key).partition(":")
    if not sep or not root_text.isdigit() or int(root_text) >= len(settings.roots):
        raise UnsafePathError(f"{what} {key!r}: expected <root>:<path> with root 0-{len(settings.roots) - 1}")
    index = int(root_text)
    return _checked(index, settings.roots[index], relative, what)


def location_of(settings: AppSettings, path: Path) -> Location:
    """The location of an existing ``path`` that lies inside one of the roots."""
    real = Path(path).resolve()
    for index, root in enumerate(settings.roots):
        if real == root or root in real.parents:
            return _checked(index, root, real.relative_to(root).as_posix(), "path")
    raise UnsafePathError(f"{path}: outside the app's roots")
