"""Type aliases shared by the signatures of the engine and of the rest of the element."""

from __future__ import annotations

import os

# a path as callers give it: a string or any os.PathLike (pathlib.Path, ...)
PathLike = str | os.PathLike
