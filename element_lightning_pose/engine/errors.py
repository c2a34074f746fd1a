"""The one base exception of the project.

Every error that means "the input (a file, a parameter, a key, a server's state) is wrong"
derives from :class:`ElpError`, with a message that names what is at fault. The command line
catches this one class (``cli.main``) and prints the message on stderr with exit status 2;
anything else is a bug and keeps its traceback. :func:`describe_validation_error` is the one
way a parameter model's validation error becomes such a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError


class ElpError(Exception):
    """A user-facing error: the message names the file, row, key or parameter at fault."""


class ProjectError(ElpError, ValueError):
    """A labeled project or keypoint file is malformed; the message names the file and place."""


def describe_validation_error(
    exc: ValidationError,
    source: str,
    model: type[BaseModel],
    *,
    key_names: Mapping[str, str] | None = None,
    per_key_lines: bool = False,
) -> str:
    """The one message of a pydantic parameter model's ``ValidationError``, naming every key at fault.

    ``source`` begins it (a file, a table row, a command); ``key_names`` shows keys as the
    caller's user knows them (e.g. command-line options); nested keys are dotted. An unknown
    key lists the known ones of its section. Our validators' messages start with their field's
    name or name the keys of a rule themselves. ``per_key_lines`` gives one line per key
    (the training configuration's many sections) instead of one line for all.
    """
    names = dict(key_names or {})
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not _is_type_tag(p)]
        dotted = ".".join(loc)
        key = names.get(dotted, dotted)
        field = loc[-1] if loc else ""
        if error["type"] == "extra_forbidden":
            known = ", ".join(_section(model, loc[:-1]).model_fields)
            message = f"unknown key (known: {known})" if per_key_lines else f"unknown key {key!r} (known: {known})"
            problems.setdefault(key if per_key_lines else "", []).append(message)
            continue
        if error["type"] == "value_error":  # our validators' own words, without pydantic's prefix
            message = str(error["ctx"]["error"])
            if per_key_lines:
                problems.setdefault(key or "(top level)", []).append(message)
                continue
            if not key:  # a rule over several keys names them itself: show the caller's names
                for name, shown in names.items():
                    message = re.sub(rf"\b{re.escape(name)}\b", shown, message)
            elif message.startswith(field):
                message = key + message[len(field) :]
            else:
                message = f"{key}: {message}"
            problems.setdefault("", []).append(message)
            continue
        message = f"{error['msg']} (got {error.get('input')!r})"
        if per_key_lines:
            problems.setdefault(key or "(top level)", []).append(message)
        else:
            problems.setdefault("", []).append(f"{key}: {message}" if key else message)
    if per_key_lines:
        lines = [f"{key}: " + "; or ".join(dict.fromkeys(messages)) for key, messages in problems.items()]
        return f"{source}: invalid configuration\n  " + "\n  ".join(lines)
    return f"{source}: " + "; ".join(dict.fromkeys(problems.get("", [])))


def _is_type_tag(part: Any) -> bool:
    """pydantic's union-branch names in an error's location (``bool``, ``list[int]``): not keys."""
    return isinstance(part, str) and (part in {"bool", "str", "int", "float"} or "[" in part)


def _section(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The (nested) model of the section at ``path``; the deepest model found."""
    for name in path:
        field = model.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model
