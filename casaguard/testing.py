"""pytest plugin for crash-regression suites (loaded through the ``pytest11`` entry point).

Installed with casaguard, so a project only needs ``pip install casaguard``:

* marker ``@pytest.mark.casaguard(expect="double-free", timeout=60, casa=True)``
  runs the test function in a sandbox child. It also takes what
  ``casaguard.call`` takes to start that child: ``mode="spawn"`` (a fresh
  interpreter: for a test that imports python-casacore *and* casatasks, which a
  fork of the CASA template refuses) or ``mode="template"``, ``flavor="casacore"``
  (a fork of the python-casacore template; use with ``casa=False``), and
  ``casalog=PATH`` (append the child's CASA log to that file). With ``expect`` the test passes
  only if the child dies of that crash kind (or one of a list of kinds); if it
  returns normally the test fails loudly -- the crash was fixed upstream and
  the workaround can go. Without ``expect`` the marker only isolates the
  test: a crash is a failure instead of the end of the pytest process.
* fixture ``casaguard_sandbox``: ``casaguard_sandbox(func, *args, **kwargs)``
  runs any callable in a sandbox child and returns an ``Outcome`` (``ok``,
  ``value``, ``crash``, ``kind``, ``signature``).

A crashed test's report carries a "casaguard" section: kind, signal, detail,
``casa_error``, signature, the kept CASA log's path and the stderr tail.

The marked test function travels to the child *by value* (like a function of
your ``__main__``): the child never imports your test module, so a module that
imports python-casacore at top level does not re-create the clash there. The
globals the function uses travel with it (modules by name, so they must be
importable in the child), and so do the values of its fixtures: **they must be
picklable** (dill), so pass paths and plain data, not open tables or tools.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from casaguard.api.tasks import call
from casaguard.crash.outcome import Outcome, capture, crash_report
from casaguard.errors import EXCEPTION_FOR_KIND, CasaCrash
from casaguard.sandbox import callspec, runner

MARKER = "casaguard"
REPORT_SECTION = "casaguard"
#: Message formats (module constants: the plugin's own tests match them).
RETURNED_NORMALLY = (
    "expected {expect} but the call returned normally — CASA may have fixed it; "
    "drop your workaround"
)
WRONG_KIND = "expected {expect} but the sandbox child ended in {kind}: {message}"
CRASHED = "the test's sandbox child crashed ({kind}): {message}"
RAISED = "the test raised in its sandbox child:\n{traceback}"
NOT_PICKLABLE = (
    "@pytest.mark.casaguard runs the test in a child process, so its fixture values must be "
    "picklable; fixture {name!r} ({type}) is not: {error}"
)
#: Every kind a marker may expect.
KNOWN_KINDS = frozenset(EXCEPTION_FOR_KIND)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "casaguard(expect=KIND, timeout=SECONDS, casa=True, mode=None, flavor='casa', "
        "casalog=None): run the test in a casaguard sandbox child; with expect, pass only if "
        "it dies of crash kind KIND (or one of a list of kinds); mode='spawn' for a fresh "
        "interpreter",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``casaguard``-marked test in a sandbox child and judge how it ended."""
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    options = _options(marker)
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function):
        pytest.fail("@pytest.mark.casaguard cannot run async tests", pytrace=False)
    # pytest's own pytest_pyfunc_call picks the arguments the same way.
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    _check_picklable(kwargs)
    outcome = capture(
        runner.run,
        callspec.CallSpec(
            func=by_value(function),
            kwargs=kwargs,
            name=pyfuncitem.name,
            setup_casa_log=options.casa,
            timeout=options.timeout,
            mode=options.mode,
            flavor=options.flavor,
            casalog=options.casalog,
        ),
    )
    _judge(pyfuncitem, options.expect, outcome)
    return True


@dataclass(frozen=True)
class MarkerOptions:
    """The keywords of ``@pytest.mark.casaguard(...)``, checked."""

    expect: tuple[str, ...] = ()
    timeout: float | None = None
    casa: bool = True
    mode: str | None = None
    flavor: str = "casa"
    casalog: str | None = None


#: ``mode=`` and ``flavor=`` values the marker accepts (those of ``casaguard.call``).
MODES = ("spawn", "template")
FLAVORS = ("casa", "casacore")
USAGE = (
    "use @pytest.mark.casaguard(expect=KIND, timeout=SECONDS, casa=True, mode='spawn'|'template', "
    "flavor='casa'|'casacore', casalog=PATH), keywords only"
)


def _options(marker: pytest.Mark) -> MarkerOptions:
    unknown = set(marker.kwargs) - {f.name for f in dataclasses.fields(MarkerOptions)}
    if marker.args or unknown:
        pytest.fail(USAGE, pytrace=False)
    raw = marker.kwargs.get("expect")
    kinds: tuple[str, ...]
    if raw is None:
        kinds = ()
    elif isinstance(raw, str):
        kinds = (raw,)
    elif isinstance(raw, Sequence):
        kinds = tuple(str(k) for k in raw)
    else:
        pytest.fail(
            f"casaguard expect= takes a kind or a list of kinds, got {raw!r}", pytrace=False
        )
    bad = [k for k in kinds if k not in KNOWN_KINDS]
    if bad:
        pytest.fail(
            f"casaguard expect={bad}: unknown kind; known: {sorted(KNOWN_KINDS)}", pytrace=False
        )
    mode = marker.kwargs.get("mode")
    if mode is not None and mode not in MODES:
        pytest.fail(f"casaguard mode={mode!r}: use one of {MODES}", pytrace=False)
    flavor = marker.kwargs.get("flavor", "casa")
    if flavor not in FLAVORS:
        pytest.fail(f"casaguard flavor={flavor!r}: use one of {FLAVORS}", pytrace=False)
    timeout = marker.kwargs.get("timeout")
    casalog = marker.kwargs.get("casalog")
    return MarkerOptions(
        expect=kinds,
        timeout=None if timeout is None else float(timeout),
        casa=bool(marker.kwargs.get("casa", True)),
        mode=mode,
        flavor=flavor,
        casalog=None if casalog is None else os.fspath(casalog),
    )


class _ImportInChild:
    """Stands for a module in a by-value function's globals; unpickles as the imported module.

    dill would otherwise send a module that is not under site-packages (an
    editable or PYTHONPATH install, the user's own package) *by value*, with
    everything it holds, including pytest's capture streams.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return importlib.import_module, (self.name,)


def run_sandboxed(
    func: Callable[..., Any],
    /,
    *args: Any,
    timeout: float | None = None,
    casa: bool = True,
    **kwargs: Any,
) -> Outcome:
    """Run ``func(*args, **kwargs)`` in a sandbox child (``casaguard.call``); return its Outcome."""
    return capture(call, func, *args, timeout=timeout, casa=casa, **kwargs)


def by_value(function: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``function`` that dill sends by value, as it does ``__main__`` functions.

    So the child never imports the test module (and whatever that imports);
    the modules the function uses are imported in the child by name.
    """
    if not isinstance(function, types.FunctionType):
        return function
    namespace = {
        name: _ImportInChild(value.__name__)
        if isinstance(value, types.ModuleType) and name != "__builtins__"
        else value
        for name, value in function.__globals__.items()
    }
    clone = types.FunctionType(
        function.__code__,
        namespace,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    clone.__kwdefaults__ = function.__kwdefaults__
    clone.__qualname__ = function.__qualname__
    clone.__module__ = "__main__"
    return clone


def _check_picklable(kwargs: dict[str, Any]) -> None:
    import dill

    for name, value in kwargs.items():
        try:
            dill.dumps(value, recurse=True)
        except Exception as error:  # noqa: BLE001 - any pickling failure is the user's to fix
            problem = NOT_PICKLABLE.format(name=name, type=type(value).__name__, error=error)
        else:
            continue
        pytest.fail(problem, pytrace=False)


def _describe(kinds: tuple[str, ...]) -> str:
    return " or ".join(kinds)


def _judge(item: pytest.Function, expect: tuple[str, ...], outcome: Outcome) -> None:
    crash = outcome.crash
    if crash is not None:
        item.add_report_section("call", REPORT_SECTION, crash_report(crash))
    if crash is None:
        if expect:
            pytest.fail(RETURNED_NORMALLY.format(expect=_describe(expect)), pytrace=False)
        return
    if crash.kind in expect:
        return
    if crash.kind == "python-error" and not expect:
        pytest.fail(RAISED.format(traceback=_remote_traceback(crash)), pytrace=False)
    if expect:
        message = WRONG_KIND.format(expect=_describe(expect), kind=crash.kind, message=crash)
        if crash.kind == "python-error":
            message += "\n" + _remote_traceback(crash)
        pytest.fail(message, pytrace=False)
    pytest.fail(CRASHED.format(kind=crash.kind, message=crash), pytrace=False)


def _remote_traceback(crash: CasaCrash) -> str:
    cause = crash.__cause__
    return str(getattr(cause, "tb", "") or crash)


class Sandbox:
    """Runs callables in sandbox children for one test (the ``casaguard_sandbox`` fixture)."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node
        self.outcomes: list[Outcome] = []

    def __call__(
        self,
        func: Callable[..., Any],
        /,
        *args: Any,
        timeout: float | None = None,
        casa: bool = True,
        **kwargs: Any,
    ) -> Outcome:
        """Run ``func(*args, **kwargs)`` in a sandbox child.

        Args:
            func: any callable (closures and test-module functions travel by value).
            timeout: seconds before the child's tree is killed (outcome kind ``timeout``).
            casa: capture a CASA log (imports casatools in the child).

        Returns:
            The Outcome: ``ok`` and ``value``, or ``crash`` with kind and signature.
            A crash is also added to the test's report.
        """
        outcome = run_sandboxed(by_value(func), *args, timeout=timeout, casa=casa, **kwargs)
        self.outcomes.append(outcome)
        if outcome.crash is not None:
            self._node.add_report_section(
                "call", f"{REPORT_SECTION} #{len(self.outcomes)}", crash_report(outcome.crash)
            )
        return outcome


@pytest.fixture
def casaguard_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Run any callable in a casaguard sandbox child and get its Outcome."""
    return Sandbox(request.node)
