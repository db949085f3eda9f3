"""Importing what a dotted path of the settings names, and saying precisely why it failed."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import traceback
from types import ModuleType

from .values import Messages, error

__all__ = ["describe_exception", "import_module_of", "importable", "signature"]


def importable(module: str) -> bool:
    """Whether an optional dependency (``prometheus_client``, ``opentelemetry.trace``) can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def describe_exception(exc: BaseException) -> str:
    """``Type: message (file, line N)``: one line, the innermost frame that is real code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({_relative(exc.filename)}, line {exc.lineno})"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<")]
    if frames and frames[-1].filename != __file__:
        text += f" ({_relative(frames[-1].filename)}, line {frames[-1].lineno})"
    return text


def signature(cls: type) -> str:
    """``Name(a, b=1)``: the constructor's parameters without annotations, or ``""``."""
    with contextlib.suppress(TypeError, ValueError):
        parameters = inspect.signature(cls)
        bare = parameters.replace(
            parameters=[parameter.replace(annotation=parameter.empty) for parameter in parameters.parameters.values()],
            return_annotation=parameters.empty,
        )
        return f"{cls.__name__}{bare}"
    return ""


def import_module_of(
    place: str,
    path: str,
    *,
    shape: str,
    shape_hint: str,
    not_found: str,
    not_found_hint: str,
    import_failed: str,
) -> tuple[tuple[ModuleType, str, str] | None, Messages]:
    """Import the module of the dotted ``path``: ((module, module path, attribute name), messages).

    ``None`` with one message saying precisely what is wrong: not a dotted path, no such module
    (id ``not_found``), or the module raised while being imported (id ``import_failed``, with the
    exception; a missing dependency inside the module is that, not ``not_found``).
    """
    module_path, _, attribute = path.rpartition(".")
    if not module_path or not all(part.isidentifier() for part in path.split(".")):
        return None, [error(not_found, f"{place} is {path!r}, which is not a dotted path {shape}.", shape_hint)]
    try:
        return (importlib.import_module(module_path), module_path, attribute), []
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_path == missing or module_path.startswith(missing + ".")):
            msg = f"{place} is {path!r}, but there is no module named {missing!r}."
            return None, [error(not_found, msg, not_found_hint)]
        failure: BaseException = exc
    except (Exception, SystemExit) as exc:
        failure = exc
    return None, [
        error(
            import_failed,
            f"{place} is {path!r}, but importing module {module_path!r} raised {describe_exception(failure)}.",
            f"Fix the error in the module; `python -c 'import {module_path}'` shows the whole traceback.",
        )
    ]
