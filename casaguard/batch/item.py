"""One input's result in a batch: ``ItemOutcome``, and ``execute``, which makes one.

``ItemOutcome`` is a ``casaguard.Outcome`` (value or crash, elapsed_s) that also
knows its input and its place in the batch, and can hold errors other than a
crash (``InvalidInput``, or anything else the item raised).

``execute`` runs on whatever thread or Dask worker an engine (``casaguard.batch.engines``)
put the item on; it turns every ``Exception`` the item's call raises into the
item's outcome, so that one crash can never abort a batch. Outcomes pickle
(Dask sends them back from workers): a remote traceback travels as text.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from casaguard.crash.outcome import Outcome
from casaguard.errors import (
    CasaCrash,
    CasaguardError,
    ChildError,
    InvalidInput,
    RemoteTraceback,
    SetupError,
)
from casaguard.sandbox import callspec


@dataclass
class ItemOutcome(Outcome):
    """What happened to one input of a batch.

    Attributes (besides Outcome's ``value``, ``crash``, ``elapsed_s``):
        index: the input's position in the batch.
        input: the input itself (a task's parameter dict, an item, a path).
        error: when not ok, the exception: a classified ``CasaCrash`` subclass
            (then also in ``crash``), ``InvalidInput``, or whatever else the
            item's call raised.
        where: ``host:pid`` of the process that drove the guarded call (the
            caller for the local engine, the Dask worker for Dask).
        traceback: the remote traceback of a Python error in the child, or the
            local traceback of an unexpected error; kept as text so it survives
            the trip back from a Dask worker.
    """

    index: int = 0
    input: Any = None
    error: Exception | None = None
    where: str = ""
    traceback: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # One source of truth: a crash is also the error, and the reverse.
        if self.error is None:
            self.error = self.crash
        elif self.crash is None and isinstance(self.error, CasaCrash):
            self.crash = self.error

    @property
    def ok(self) -> bool:
        """True when the call returned; then ``value`` holds its result."""
        return self.error is None

    @property
    def kind(self) -> str:
        """``"ok"``, a crash kind (``"double-free"``, ``"casa-error"``...), else the error class."""
        if self.ok:
            return "ok"
        if isinstance(self.error, CasaCrash):
            return self.error.kind
        if isinstance(self.error, InvalidInput):
            return "invalid-input"
        if isinstance(self.error, SetupError):
            return "setup-error"
        return f"error:{type(self.error).__name__}"

    @property
    def label(self) -> str:
        """A short name for the input in tables: its ``vis`` when it has one."""
        return describe_input(self.input)

    def unwrap(self) -> Any:
        """Return the value, or raise the item's error (with its remote traceback as cause).

        Raises:
            CasaguardError: the item's classified error; any other exception it raised.
        """
        if self.ok:
            return self.value
        assert self.error is not None
        if self.error.__cause__ is None and self.traceback:
            raise self.error from RemoteTraceback(self.traceback)
        raise self.error

    def facts(self) -> dict[str, Any]:
        """Return this outcome as a JSON-ready dict (``--json``, logs, reports)."""
        facts: dict[str, Any] = {
            "index": self.index,
            "input": self.input,
            "ok": self.ok,
            "kind": self.kind,
            "elapsed_s": round(self.elapsed_s, 4),
            "where": self.where,
        }
        if self.ok:
            facts["value"] = _jsonable(self.value)
        elif isinstance(self.error, CasaCrash):
            facts["error"] = self.error.facts()
        else:
            facts["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
        return facts


def describe_input(item: Any) -> str:
    """Name an input for humans: a parameter dict by its ``vis``, anything else by ``str``."""
    if isinstance(item, Mapping) and item.get("vis"):
        return str(item["vis"])
    return os.fspath(item) if isinstance(item, os.PathLike) else str(item)


def _here() -> str:
    """``host:pid`` of this process: the caller, or the Dask worker that ran the item."""
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(
    run: Callable[[Any], Any],
    index: int,
    item: Any,
    cancel: threading.Event | None = None,
    remote: bool = False,
) -> ItemOutcome:
    """Run one item where the engine put it and turn anything it raises into its Outcome.

    ``cancel`` (local threads only) lets the caller's Ctrl-C kill this item's
    child. ``remote``: the outcome travels back pickled, so an error that
    cannot be pickled is replaced by a plain one carrying its text.
    """
    started = time.monotonic()
    token = callspec.CANCEL.set(cancel) if cancel is not None else None
    try:
        value = run(item)
    except Exception as error:  # noqa: BLE001 - one item's failure is its outcome, not the batch's
        if remote:
            error = _picklable(error)
        return ItemOutcome(
            index=index,
            input=item,
            error=error,
            elapsed_s=time.monotonic() - started,
            where=_here(),
            traceback=traceback_text(error),
        )
    finally:
        if token is not None:
            callspec.CANCEL.reset(token)
    return ItemOutcome(
        index=index,
        input=item,
        value=value,
        elapsed_s=time.monotonic() - started,
        where=_here(),
    )


def traceback_text(error: BaseException) -> str | None:
    """The text worth keeping of an error's traceback (the child's, for a child's error)."""
    if isinstance(error.__cause__, RemoteTraceback):
        return error.__cause__.tb
    if isinstance(error, CasaguardError):
        return None  # a classified error: its attributes say it all
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _picklable(error: Exception) -> Exception:
    """``error`` if it can travel pickled; else the closest thing that can."""
    if isinstance(error, ChildError) and error.original is not None and not _pickles(error):
        error.original = None  # the child's own exception object; its text stays
    if _pickles(error):
        return error
    return RuntimeError(f"{type(error).__qualname__}: {error}")


def _pickles(error: Exception) -> bool:
    try:
        pickle.dumps(error)
    except Exception:  # noqa: BLE001 - anything pickle raises means "cannot travel"
        return False
    return True


def _jsonable(value: Any) -> Any:
    """A report's own ``to_dict()`` or ``facts()``, or a dataclass's fields; else the value."""
    for method in ("to_dict", "facts"):
        render = getattr(value, method, None)
        if callable(render):
            return render()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
