"""The one base exception of the project.

Every error that means "the input (a file, a parameter, a key, a server's state) is wrong"
derives from :class:`ElpError`, with a message that names what is at fault. The command line
catches this one class (``cli.main``) and prints the message on stderr with exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ElpError(Exception):
    """A user-facing error: the message names the file, row, key or parameter at fault."""


class ProjectError(ElpError, ValueError):
    """A labeled project or keypoint file is malformed; the message names the file and place."""
