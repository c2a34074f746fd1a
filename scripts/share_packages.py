"""Hard-link the heavy installed packages of one venv into another, so both hold one copy.

Run with the *source* venv's Python:

    .venv/bin/python scripts/share_packages.py DEST_SITE_PACKAGES torch torchvision 'nvidia-*'

PyTorch with its CUDA libraries is about 5.5 GB per venv; the test command builds two venvs
(DataJoint 2.x and 0.14), and a CI machine with a nearly full disk failed installing the
second copy. Linking each file listed in a distribution's RECORD (its dist-info included)
makes the destination venv see the same distribution as installed, so its `pip install`
skips it. A hard link is a second name for the same file: uninstalling or upgrading in one
venv removes only that venv's names. Files outside site-packages (console scripts, whose
first line names the source venv's Python) are not linked. When the two paths are on
different file systems, nothing is linked and pip installs as usual.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from importlib import metadata
from pathlib import Path


def matching_distributions(patterns: list[str]) -> list[metadata.Distribution]:
    """The installed distributions whose normalised name matches one of the patterns."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        if any(fnmatch.fnmatch(name, p.lower()) for p in patterns):
            found[name] = dist
    return [found[k] for k in sorted(found)]


def link_distribution(dist: metadata.Distribution, dest: Path) -> int:
    """Hard-link one distribution's site-packages files under dest; returns the count."""
    root = Path(str(dist.locate_file("")))
    count = 0
    for rel in dist.files or []:
        if rel.parts and rel.parts[0] == "..":  # bin/ scripts belong to the source venv
            continue
        src, dst = root / rel, dest / rel
        if not src.is_file() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        count += 1
    return count


def installed_in(dist: metadata.Distribution, dest: Path) -> bool:
    """Whether dest already holds some version of this distribution (a dist-info for it)."""
    stem = dist.metadata["Name"].lower().replace("-", "_")
    return any(p.name.lower().split("-")[0] == stem for p in dest.glob("*.dist-info"))


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest, patterns = Path(argv[0]), argv[1:]
    dists = matching_distributions(patterns)
    if not dists:
        return 0
    src_root = Path(str(dists[0].locate_file("")))
    if not dest.is_dir() or os.stat(dest).st_dev != os.stat(src_root).st_dev:
        return 0  # another file system: hard links are impossible, pip will install
    if f"python{sys.version_info.major}.{sys.version_info.minor}" not in dest.parts:
        return 0  # another Python: compiled extensions would not load there
    for dist in dists:
        if installed_in(dist, dest):
            continue  # any version already there is left alone: never mix two versions
        link_distribution(dist, dest)
    names = ", ".join(f"{d.metadata['Name']} {d.version}" for d in dists)
    print(f"linked from {src_root} into {dest}: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
