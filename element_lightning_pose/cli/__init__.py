"""The ``elp`` command.

One module per command group under this package (``db``, ``train``, ``predict``, ``smooth``,
``plot``, ``demo``, ``worker``/``jobs``); each exposes ``configure_parser(parser)`` and
``run(args) -> int``. A module is imported only when its command runs, so ``elp db status``
never pays for importing torch.

Errors: the engine and the schemas raise :class:`~element_lightning_pose.engine.errors.ElpError`
subclasses whose messages name what is at fault. :func:`main` catches that one class and
prints ``elp COMMAND: error: MESSAGE`` on stderr with exit status 2 (:func:`fail`); anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from element_lightning_pose.engine.errors import ElpError

# command -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "db": ("element_lightning_pose.cli.db", "start/stop/status of a private local database server"),
    "train": ("element_lightning_pose.cli.train", "train a pose model on a labeled project (no database)"),
    "predict": ("element_lightning_pose.cli.predict", "predict keypoints on videos with a trained model"),
    "smooth": ("element_lightning_pose.cli.smooth", "Ensemble Kalman Smoother over member prediction CSVs"),
    "demo": ("element_lightning_pose.cli.demo", "run the demo pipeline end to end on a local database"),
    "worker": ("element_lightning_pose.cli.worker", "populate the element's tables (reserve_jobs) as a worker"),
    "jobs": ("element_lightning_pose.cli.worker", "list or clear errored / stale job reservations"),
    "plot": ("element_lightning_pose.cli.plot", "trace plots, labeled videos and evaluation figures"),
    "triangulate": (
        "element_lightning_pose.cli.triangulate",
        "3D keypoints from the predictions of calibrated cameras",
    ),
    "calibrate": ("element_lightning_pose.cli.calibrate", "calibrate a camera rig from ChArUco / checkerboard videos"),
    "app": ("element_lightning_pose.cli.app", "the browser app: label, train, review and relabel"),
}


class ArgumentError(ElpError):
    """A command-line argument that argparse cannot check (NAME=PATH pairs, files it names)."""


def fail(command: str, message: object, status: int = 2) -> int:
    """Print ``elp COMMAND: error: MESSAGE`` on stderr and return ``status`` (2: bad input)."""
    print(f"elp {command}: error: {message}", file=sys.stderr)
    return status


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported to configure its arguments.
        if argv and argv[0] == name:
            configure(name, sub_parser)
    return parser


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """Add command ``name``'s arguments to ``parser`` (imports its module)."""
    module = importlib.import_module(SUBCOMMANDS[name][0])
    module.configure_parser(parser, name)


def main(argv: list[str] | None = None, freeze_imports: bool = False) -> int:
    """Run one ``elp`` command; ``argv`` defaults to this process's arguments.

    ``freeze_imports`` (the console script): the garbage collector is off while the command's
    module and its dependencies are imported, and their objects are then moved out of its
    sight (``gc.freeze``).
    They live as long as the process anyway; without it every full collection, and the ones
    Python runs at exit, traverse the hundreds of thousands of objects numpy, scipy and pandas
    create (``elp smooth``: 75 ms of its exit, of 0.9 s in all). Not for a caller that goes
    on after ``main`` returns (tests): garbage that exists at that moment would never be freed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    collecting = gc.isenabled()
    if freeze_imports:
        # Imports create objects by the hundred thousand and almost no garbage; collections
        # while they run would only traverse what is about to be frozen (30-40 ms of them).
        gc.disable()
    try:
        parser = build_parser(argv)  # imports the command's module
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        module = importlib.import_module(SUBCOMMANDS[args.command][0])
    finally:
        if freeze_imports:
            gc.freeze()
            if collecting:
                gc.enable()
    try:
        return int(module.run(args) or 0)
    except ElpError as exc:
        return fail(args.command, exc)


def console() -> None:
    """The ``elp`` console script (and ``python -m element_lightning_pose.cli``)."""
    sys.exit(main(freeze_imports=True))
