"""``elp predict``: interim wrapper (moved here in the restructure)."""

from __future__ import annotations

import argparse
import inspect

from element_lightning_pose.engine.predict import configure_parser as _configure, run_from_cli as _run


def configure_parser(parser: argparse.ArgumentParser, command: str = "predict") -> None:
    _configure(parser, command) if len(inspect.signature(_configure).parameters) > 1 else _configure(parser)


def run(args: argparse.Namespace) -> int:
    return _run(args)
