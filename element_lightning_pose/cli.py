"""The ``elp`` command.

Each subcommand lives in the module that does the work; that module exposes
``configure_parser(parser)`` and ``run_from_cli(args) -> int``. Modules are imported only
when their subcommand runs, so ``elp db status`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "db": ("element_lightning_pose.localdb", "start/stop/status of a private local database server"),
    "train": ("element_lightning_pose.engine.train", "train a pose model on a labeled project (no database)"),
    "predict": ("element_lightning_pose.engine.predict", "predict keypoints on videos with a trained model"),
    "smooth": ("element_lightning_pose.engine.eks", "Ensemble Kalman Smoother over member prediction CSVs"),
    "demo": ("element_lightning_pose.demo", "run the demo pipeline end to end on a local database"),
    "worker": ("element_lightning_pose.worker", "populate the element's tables (reserve_jobs) as a worker"),
    "jobs": ("element_lightning_pose.worker", "list or clear errored / stale job reservations"),
    "plot": ("element_lightning_pose.plotting", "trace plots, labeled videos and evaluation figures"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported to configure its arguments.
        if argv and argv[0] == name:
            module = importlib.import_module(module_name)
            module.configure_parser(sub_parser, name) if _takes_name(module) else module.configure_parser(sub_parser)
    return parser


def _takes_name(module) -> bool:
    import inspect

    return len(inspect.signature(module.configure_parser).parameters) > 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run_from_cli(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
