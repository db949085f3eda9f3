"""``WORKERS["WORKERS"]``: importing the worker classes, checking them, and choosing which run.

Validating an entry imports its module and calls the class with its ``OPTIONS``, to learn the
worker's name: worker constructors must be cheap and free of side effects (connect in ``run()``).
A process constructs each worker once (:func:`construct_worker`): the system checks,
``load_settings()`` and ``build_pool()`` share the instances of the last validation.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..core.backoff import Backoff
from ..core.worker import Worker, generator_run_problem
from .ids import (
    E_ATTRIBUTE_NOT_FOUND,
    E_BAD_ENTRY,
    E_BAD_NAME,
    E_CONSTRUCTOR_FAILED,
    E_DUPLICATE_NAME,
    E_GENERATOR_RUN,
    E_IMPORT_FAILED,
    E_MODULE_NOT_FOUND,
    E_NO_CLASS,
    E_NO_RUN,
    E_NOT_A_WORKER,
    E_RESTART_WITHOUT_SILENCE,
    W_NO_WORKERS,
)
from .imports import describe_exception, import_module_of, signature
from .types import SETTING, WorkerSpec
from .values import (
    Messages,
    attempts,
    backoff,
    boolean,
    did_you_mean,
    error,
    got,
    seconds,
    section,
    warning,
    where,
    wrong_type,
)

__all__ = [
    "ENTRY_KEYS",
    "MISSING",
    "checkpoint_before_constructing",
    "construct_worker",
    "forget_constructed_workers",
    "parse_workers",
    "select_workers",
]

#: The keys of a dict entry of ``WORKERS["WORKERS"]``.
ENTRY_KEYS = (
    "CLASS",
    "OPTIONS",
    "DEFERRED_START_THRESHOLD",
    "MAX_EXECUTIONS_ATTEMPTS",
    "RESTART_BACKOFF",
    "MAX_SILENCE",
    "RESTART_ON_SILENCE",
    "SINGLETON",
)

#: Marks a key that is absent (None is a value).
MISSING: Any = object()

_ENTRY_EXAMPLE = "{'CLASS': 'myapp.workers.MyWorker', 'OPTIONS': {'batch_size': 50}}"


def parse_workers(value: object, pool_backoff: Backoff) -> tuple[tuple[WorkerSpec, ...], Messages]:
    """Every entry of ``WORKERS["WORKERS"]`` (:data:`MISSING` when absent), names unique."""
    place = where("WORKERS")
    no_workers_hint = (
        f"That is fine for a web process; add dotted paths of Worker subclasses to {place} "
        f"for `manage.py runworkers` to have something to run."
    )
    if value is MISSING:
        return (), [warning(W_NO_WORKERS, f"{place} is not set: no worker is configured.", no_workers_hint)]
    if not isinstance(value, list | tuple):
        example = "'WORKERS': ['myapp.workers.MyWorker']"
        return (), [wrong_type(place, value, "a list of dotted paths or dicts", example)]
    if not value:
        return (), [warning(W_NO_WORKERS, f"{place} is empty: no worker is configured.", no_workers_hint)]
    messages: Messages = []
    specs: list[WorkerSpec] = []
    first_by_name: dict[str, tuple[str, int]] = {}
    validation = _WAITING.validation()
    for index, entry in enumerate(value):
        spec, found = _entry(index, entry, pool_backoff, validation)
        messages += found
        if spec is None:
            continue
        if spec.name in first_by_name:
            messages.append(_duplicate(spec, index, *first_by_name[spec.name]))
            continue
        first_by_name[spec.name] = (spec.path, index)
        specs.append(spec)
    _WAITING.keep(validation)
    return tuple(specs), messages


def _duplicate(spec: WorkerSpec, index: int, other_path: str, other_index: int) -> Any:
    entries = f"{where('WORKERS', other_index)} and {where('WORKERS', index)}"
    if other_path == spec.path:
        msg = f"{spec.path!r} is listed twice ({entries}): worker name {spec.name!r} is not unique."
        return error(E_DUPLICATE_NAME, msg, "Remove one of the two entries.")
    msg = (
        f"Worker name {spec.name!r} is used by both {other_path!r} and {spec.path!r} "
        f"({entries}); worker names must be unique."
    )
    hint = (
        "Give each worker class a distinct `name` (a class attribute, or a property that "
        "depends on the OPTIONS when one class is configured several times)."
    )
    return error(E_DUPLICATE_NAME, msg, hint)


def _entry(
    index: int, entry: object, pool_backoff: Backoff, validation: _Validation
) -> tuple[WorkerSpec | None, Messages]:
    """One entry: a dotted path, or a dict with ``CLASS`` and per-worker overrides."""
    keys: tuple[object, ...] = ("WORKERS", index)
    overrides: dict[str, Any] = {}
    options: Mapping[str, Any] = {}
    messages: Messages = []
    if isinstance(entry, str):
        path, path_keys = entry, keys
    elif isinstance(entry, Mapping):
        parsed, messages = _dict_entry(keys, entry, pool_backoff)
        if parsed is None:
            return None, messages
        path, overrides, options = parsed
        path_keys = (*keys, "CLASS")
    else:
        msg = f"{where(*keys)} must be a dotted path (str) or a dict, got {got(entry)}."
        hint = "Write 'myapp.workers.MyWorker', or {'CLASS': 'myapp.workers.MyWorker', ...} for per-worker settings."
        return None, [error(E_BAD_ENTRY, msg, hint)]
    worker_class, found = _worker_class(where(*path_keys), path)
    messages += found
    if worker_class is None or any(message.is_serious() for message in messages):
        return None, messages
    name, found = _worker_name(where(*keys), path, worker_class, options, validation)
    messages += found
    if name is None:
        return None, messages
    spec = WorkerSpec(
        path=path, worker_class=worker_class, name=name, options=MappingProxyType(dict(options)), **overrides
    )
    return spec, messages


def _dict_entry(
    keys: tuple[object, ...], entry: Mapping[Any, Any], pool_backoff: Backoff
) -> tuple[tuple[str, dict[str, Any], Mapping[str, Any]] | None, Messages]:
    """A dict entry: (its CLASS path, its overrides, its OPTIONS), or None when it has no usable CLASS."""
    given, messages = section(keys, entry, ENTRY_KEYS, _ENTRY_EXAMPLE)
    if "CLASS" not in given:
        hint = f"Add the dotted path of the worker class, e.g. {_ENTRY_EXAMPLE}."
        return None, [*messages, error(E_NO_CLASS, f"{where(*keys)} has no 'CLASS' key.", hint)]
    path = given["CLASS"]
    if not isinstance(path, str):
        example = "'CLASS': 'myapp.workers.MyWorker'"
        return None, [*messages, wrong_type(where(*keys, "CLASS"), path, "a dotted path (str)", example)]
    overrides: dict[str, Any] = {}
    parsers: dict[str, Any] = {
        "DEFERRED_START_THRESHOLD": seconds,
        "MAX_EXECUTIONS_ATTEMPTS": attempts,
        "RESTART_BACKOFF": lambda k, v: backoff(k, v, pool_backoff),
        "MAX_SILENCE": lambda k, v: seconds(k, v, positive=True),
        "RESTART_ON_SILENCE": boolean,
        "SINGLETON": boolean,
    }
    for key, parse in parsers.items():
        if given.get(key) is not None:
            value, found = parse((*keys, key), given[key])
            messages += found
            overrides[key.lower()] = value
    if overrides.get("restart_on_silence") and given.get("MAX_SILENCE") is None:
        messages.append(
            error(
                E_RESTART_WITHOUT_SILENCE,
                f"{where(*keys, 'RESTART_ON_SILENCE')} is True, but {where(*keys)} has no 'MAX_SILENCE'.",
                "Set 'MAX_SILENCE' (seconds without ctx.heartbeat() after which the worker is "
                "silent and restarted), or remove 'RESTART_ON_SILENCE'.",
            )
        )
    if "restart_on_silence" in overrides:
        overrides["restart_on_silence"] = bool(overrides["restart_on_silence"])
    options: Mapping[str, Any] = {}
    raw_options = given.get("OPTIONS")
    if raw_options is not None:
        if isinstance(raw_options, Mapping) and all(isinstance(key, str) for key in raw_options):
            options = raw_options
        else:
            messages.append(
                wrong_type(
                    where(*keys, "OPTIONS"),
                    raw_options,
                    "a dict of constructor keyword arguments (str keys)",
                    "'OPTIONS': {'batch_size': 50}",
                )
            )
    return (path, overrides, options), messages


def _worker_class(place: str, path: str) -> tuple[type[Worker] | None, Messages]:
    """Import ``path``; one message saying precisely what is wrong when it is not a Worker class."""
    imported, messages = import_module_of(
        place,
        path,
        shape="'module.ClassName'",
        shape_hint="Write the full import path of a Worker subclass, e.g. 'myapp.workers.MyWorker'.",
        not_found=E_MODULE_NOT_FOUND,
        not_found_hint="Check the spelling of the module path, and that its package is installed and importable "
        "(on sys.path).",
        import_failed=E_IMPORT_FAILED,
    )
    if imported is None:
        return None, messages
    module, module_path, attribute = imported
    try:
        worker_class = getattr(module, attribute)
    except Exception:
        candidates = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, Worker) and value is not Worker
        )
        suggestion = did_you_mean(attribute, candidates) or did_you_mean(
            attribute, [name for name in vars(module) if not name.startswith("_")]
        )
        msg = f"{place} is {path!r}, but module {module_path!r} has no attribute {attribute!r}"
        msg += f"; did you mean {suggestion!r}?" if suggestion else "."
        hint = (
            f"Worker classes in {module_path}: {', '.join(candidates)}."
            if candidates
            else f"Check the class name; module {module_path!r} defines no Worker subclass."
        )
        return None, [error(E_ATTRIBUTE_NOT_FOUND, msg, hint)]
    if not isinstance(worker_class, type):
        if isinstance(worker_class, Worker):
            kind = "a Worker instance"
        elif inspect.ismodule(worker_class):
            kind = "a module"
        elif inspect.isroutine(worker_class):
            kind = "a function"
        else:
            kind = got(worker_class)
        hint = "Point to a subclass of django_workers.Worker (the class itself, not an instance or a function)."
        return None, [error(E_NOT_A_WORKER, f"{place} is {path!r}, which is not a class but {kind}.", hint)]
    if not issubclass(worker_class, Worker):
        msg = f"{place} is {path!r}, which is not a subclass of django_workers.Worker."
        hint = f"Make it `class {worker_class.__name__}(django_workers.Worker)` with a `name` and a `run(ctx)`."
        return None, [error(E_NOT_A_WORKER, msg, hint)]
    if worker_class.run is Worker.run:
        msg = f"{place} is {path!r}, whose class does not implement run(ctx)."
        hint = f"Define `def run(self, ctx)` (or `async def run(self, ctx)`) in {worker_class.__name__}."
        return None, [error(E_NO_RUN, msg, hint)]
    problem = generator_run_problem(worker_class)
    if problem is not None:
        hint = "Make run() a plain `def run(self, ctx)` or `async def run(self, ctx)` without `yield`."
        return None, [error(E_GENERATOR_RUN, f"{place} is {path!r}, but {problem}.", hint)]
    return worker_class, []


def _worker_name(
    place: str, path: str, worker_class: type[Worker], options: Mapping[str, Any], validation: _Validation
) -> tuple[str | None, Messages]:
    """Instantiate the class with its OPTIONS (as the pool will) and read its name."""
    call = f"{worker_class.__name__}(**OPTIONS)" if options else f"{worker_class.__name__}()"
    reused = validation.reuse(worker_class, options)
    if reused is None:
        _before_constructing()
    try:
        worker = reused.worker if reused is not None else worker_class(**dict(options))
    # SystemExit too: a constructor calling sys.exit() is a configuration error to report, not an exit.
    except (Exception, SystemExit) as exc:
        given = ", ".join(options) or "none"
        hint = (
            f"Fix OPTIONS (given: {given}; the constructor is {signature(worker_class) or 'not introspectable'}) "
            f"or the constructor. Constructors run during system checks: keep them free of I/O, connect in run()."
        )
        return None, [
            error(E_CONSTRUCTOR_FAILED, f"{place} is {path!r}, but {call} raised {describe_exception(exc)}.", hint)
        ]
    try:
        name = worker.name
    except (Exception, SystemExit) as exc:
        msg = f"{place} is {path!r}, whose `name` raised {describe_exception(exc)}."
        return None, [
            error(E_BAD_NAME, msg, 'Set a class attribute such as name = "my-worker", or fix the name property.')
        ]
    if not isinstance(name, str) or not name.strip():
        problem = f"an empty name {name!r}" if isinstance(name, str) else f"a name that is not a str: {got(name)}"
        hint = (
            f'Set a class attribute such as name = "my-worker" in {worker_class.__name__} '
            f"(a non-empty str, unique in the pool)."
        )
        return None, [error(E_BAD_NAME, f"{place} is {path!r}, which has {problem}.", hint)]
    validation.use(reused or _Constructed(worker_class, MappingProxyType(dict(options)), name, worker))
    return name, []


# -- constructing each worker once ------------------------------------------------------------------


@dataclass(eq=False)
class _Constructed:
    """A worker instance constructed by a validation, and what it was constructed from."""

    worker_class: type[Worker]
    options: Mapping[str, Any]
    name: str
    worker: Worker
    #: A pool took it (under the lock of :class:`_WaitingWorkers`): it never waits again.
    taken: bool = False

    def matches(self, worker_class: type[Worker], options: Mapping[str, Any], name: str | None = None) -> bool:
        if self.worker_class is not worker_class or (name is not None and self.name != name):
            return False
        try:
            return bool(dict(self.options) == dict(options))
        except Exception:  # an OPTIONS value whose == raises or is ambiguous (an array, say): no reuse
            return False


class _Validation:
    """The instances one validation of ``WORKERS["WORKERS"]`` uses: the last validation's, or new ones."""

    def __init__(self, waiting: Sequence[_Constructed]) -> None:
        self._reusable = list(waiting)
        self.used: list[_Constructed] = []

    def reuse(self, worker_class: type[Worker], options: Mapping[str, Any]) -> _Constructed | None:
        """A waiting instance of ``worker_class`` built with equal ``options``; each one serves one entry."""
        for index, candidate in enumerate(self._reusable):
            if candidate.matches(worker_class, options):
                return self._reusable.pop(index)
        return None

    def use(self, constructed: _Constructed) -> None:
        """The instance of an entry that is valid so far."""
        self.used.append(constructed)


class _WaitingWorkers:
    """The instances of the last validation, until the pool that runs them takes them.

    A validation constructs every worker to learn its name, and a process validates the setting
    several times (the system checks, ``load_settings()``, the AppConfig's pool): the next
    validation reuses these instances and ``build_pool()`` takes them, so that a process constructs
    each worker once. A pool owns its instances: another pool gets new ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Constructed] = []

    def validation(self) -> _Validation:
        with self._lock:
            return _Validation(self._waiting)

    def keep(self, validation: _Validation) -> None:
        """Wait with the instances ``validation`` used, but those a pool took meanwhile."""
        with self._lock:
            self._waiting = [constructed for constructed in validation.used if not constructed.taken]

    def take(self, spec: WorkerSpec) -> Worker | None:
        with self._lock:
            for index, candidate in enumerate(self._waiting):
                if candidate.matches(spec.worker_class, spec.options, spec.name):
                    del self._waiting[index]
                    candidate.taken = True
                    return candidate.worker
        return None

    def forget(self) -> None:
        with self._lock:
            self._waiting = []


_WAITING = _WaitingWorkers()

_checkpoint: ContextVar[Callable[[], None] | None] = ContextVar("django_workers_construction_checkpoint", default=None)


def _before_constructing() -> None:
    checkpoint = _checkpoint.get()
    if checkpoint is not None:
        checkpoint()


@contextmanager
def checkpoint_before_constructing(checkpoint: Callable[[], None]) -> Iterator[None]:
    """Call ``checkpoint`` before each worker this context constructs; what it raises propagates.

    ``runworkers`` ends its start-up this way between two slow constructors after a signal. The
    exception must not be an ``Exception`` (nor ``SystemExit``): the validation reports those of a
    constructor as check messages.
    """
    token = _checkpoint.set(checkpoint)
    try:
        yield
    finally:
        _checkpoint.reset(token)


def construct_worker(spec: WorkerSpec) -> Worker:
    """The worker of ``spec`` for a new pool: the instance the last validation built, else a new one.

    Each instance is handed out once (a pool owns its workers). The constructor's exceptions propagate.
    """
    worker = _WAITING.take(spec)
    if worker is None:
        _before_constructing()
        worker = spec.instantiate()
    return worker


def forget_constructed_workers() -> None:
    """Drop the instances waiting for a pool (a setting changed: a constructor may read any)."""
    _WAITING.forget()


# -- choosing the workers to run ----------------------------------------------------------------------


def _unknown_names(unknown: Sequence[str], known: Sequence[str]) -> str:
    parts = []
    for name in unknown:
        suggestion = did_you_mean(name, known)
        if suggestion is None:
            containing = [candidate for candidate in known if name.lower() in candidate.lower()]
            suggestion = containing[0] if len(containing) == 1 else None
        parts.append(f"{name!r} (did you mean {suggestion!r}?)" if suggestion else repr(name))
    noun = "worker" if len(unknown) == 1 else "workers"
    configured = ", ".join(known) if known else f"none (settings.{SETTING}['WORKERS'] is empty)"
    return f"unknown {noun} {', '.join(parts)}; configured workers: {configured}"


def select_workers(
    specs: Sequence[WorkerSpec], *, only: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[WorkerSpec, ...]:
    """The specs named in ``only`` (all when empty) minus those in ``exclude``, in configured order.

    Raises ``ValueError`` naming any unknown name, with the configured names (and a "did you mean").
    """
    if isinstance(only, str) or isinstance(exclude, str):
        raise TypeError("only and exclude are sequences of worker names, not a single str")
    known = [spec.name for spec in specs]
    unknown = [name for name in dict.fromkeys([*only, *exclude]) if name not in known]
    if unknown:
        raise ValueError(_unknown_names(unknown, known))
    wanted = set(only) if only else set(known)
    wanted.difference_update(exclude)
    return tuple(spec for spec in specs if spec.name in wanted)
