"""Parent side of the warm template: which template serves a call, or spawn instead.

One template per flavor, started on first use (or by ``warmup()``) and
replaced when it died or ``CASASITECONFIG`` changed; ``launcher()`` gives the
runner a launcher that forks it for each call and falls back to spawning when
it cannot. A process forked from this one forgets its parent's templates. One
template process is ``connection.Template``; the package docstring has the design.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time

from casaguard import casaenv, events
from casaguard.errors import SetupError
from casaguard.sandbox import callspec, procs, spawn
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox.template.connection import (
    Template,
    TemplateSetupFailed,
    TemplateUnavailable,
)
from casaguard.sandbox.template.flavors import (
    FLAVORS,
    HANDSHAKE_S,
    RETRY_AFTER_S,
    START_TIMEOUT_S,
)

log = events.get_logger()


TEMPLATE_UNAVAILABLE = "the warm template cannot serve calls: {reason}"


class TemplateHandle:
    """A fork of the template, as the runner waits on it."""

    mode = "template"
    replies = True

    def __init__(self, template: Template, pid: int) -> None:
        self.template = template
        self.pid = pid
        self._status: int | None = None

    def exit_status(self) -> int | None:
        if self._status is None:
            self._status = self.template.exit_status(self.pid, timeout=1.0)
        return self._status

    def detach(self) -> bool:
        # The template reaps its forks; its exit report for this pid is dropped.
        self.template.forget(self.pid)
        return True

    def kill_tree(self) -> None:
        # The fork leads its own session, so its group holds any straggler too.
        procs.kill_tree(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + callspec.KILL_GRACE_S
        while self.exit_status() is None and time.monotonic() < deadline:
            pass


class TemplateLauncher:
    """Start each call as a fork of the warm template; fall back to ``fallback``."""

    mode = "template"

    def __init__(self, fallback: callspec.Launcher, required: bool, flavor: str = "casa") -> None:
        self.fallback = fallback
        self.required = required
        self.flavor = flavor

    def start(self, job: _job.JobDir) -> callspec.ChildHandle:
        """Fork the template for ``job`` (starting it if needed), or spawn.

        Raises:
            SetupError: ``required`` and the template cannot be started.
        """
        env = spawn.child_environment()
        failure = ""
        # Twice: a template that died since the last call is replaced once.
        for _ in range(2):
            try:
                template = _current_template(env, self.flavor)
            except TemplateUnavailable as error:
                if self.required:
                    # CASA's own one line when its configuration is the cause.
                    setup = isinstance(error, TemplateSetupFailed)
                    reason = str(error) if setup else TEMPLATE_UNAVAILABLE.format(reason=error)
                    raise SetupError(reason) from None
                # A spawned child still serves calls that need no CASA (casa=False);
                # one that needs CASA replies with the same SetupError line.
                return self._fall_back(job, str(error))
            try:
                pid, alive = template.fork(job.path, env)
                break
            except TemplateUnavailable as error:
                failure = str(error)
                template.await_death(callspec.KILL_GRACE_S)
        else:
            return self._fall_back(job, failure)
        if not alive and pid == 0:
            return self._fall_back(job, "fork failed in the template")
        if not alive:
            log.warning(
                "template_fork_unresponsive",
                template_pid=template.pid,
                pid=pid,
                after_s=HANDSHAKE_S,
            )
            # The fork may have opened its output file before it stalled.
            for name in (_job.OUTPUT, _job.PROGRESS):
                job.file(name).unlink(missing_ok=True)
            return self._fall_back(job, "fork did not answer")
        return TemplateHandle(template, pid)

    def _fall_back(self, job: _job.JobDir, reason: str) -> callspec.ChildHandle:
        log.warning("template_fallback", reason=reason, mode=self.fallback.mode)
        return self.fallback.start(job)


_lock = threading.Lock()
#: flavor -> the running template, when to retry after a failed start, and why it failed.
_templates: dict[str, Template] = {}
_retry_at: dict[str, float] = {}
_last_failure: dict[str, str] = {}


def _current_template(env: dict[str, str], flavor: str = "casa", wait: bool = True) -> Template:
    """The running template of ``flavor``, started (or restarted) if needed.

    Args:
        wait: block until it is ready (else return it while it still imports CASA).

    Raises:
        TemplateUnavailable: it cannot start, or failed to recently.
    """
    with _lock:
        template = _templates.get(flavor)
        site_config = env.get(casaenv.SITE_CONFIG_ENV, "")
        if template is not None and (template.dead or template.site_config != site_config):
            if not template.dead:
                # CASA read its site config at import: a new one needs a new template.
                log.info("template_restart", pid=template.pid, reason="CASASITECONFIG changed")
                template.close()
            _templates.pop(flavor, None)
            template = None
        if template is None:
            if time.monotonic() < _retry_at.get(flavor, 0.0):
                raise TemplateUnavailable(_last_failure.get(flavor, ""))
            template = _templates[flavor] = Template(env, flavor)
            log.info("template_starting", flavor=flavor)
    if not wait:
        return template
    started = time.monotonic()
    if template.wait_ready(START_TIMEOUT_S):
        if not template.announced:
            template.announced = True
            waited = round(time.monotonic() - started, 3)
            log.info("template_ready", pid=template.pid, wait_s=waited)
        return template
    with _lock:
        if _templates.get(flavor) is template:
            del _templates[flavor]
            _retry_at[flavor] = time.monotonic() + RETRY_AFTER_S
            _last_failure[flavor] = template.failure
    template.close()
    if template.setup_error:
        raise TemplateSetupFailed(template.setup_error)
    raise TemplateUnavailable(template.failure)


def launcher(
    fallback: callspec.Launcher, required: bool = False, flavor: str = "casa"
) -> callspec.Launcher:
    """The template launcher (``launchers.choose_launcher`` calls this).

    Args:
        fallback: the launcher used when the template cannot serve a call.
        required: raise ``SetupError`` instead of falling back when it cannot start.
        flavor: ``"casa"`` (casatools) or ``"casacore"`` (python-casacore); see FLAVORS.
    """
    if flavor not in FLAVORS:
        raise SetupError(f"unknown template flavor {flavor!r}: use one of {sorted(FLAVORS)}")
    return TemplateLauncher(fallback, required, flavor)


def warmup(timeout: float = START_TIMEOUT_S, *, wait: bool = True) -> int | None:
    """Start the warm template now, so the first guarded call does not pay CASA's import.

    Use it where a process starts that will make guarded calls: a
    ``multiprocessing.Pool`` initializer (``Pool(4,
    initializer=functools.partial(casaguard.warmup, wait=False))`` starts each
    worker's template in the background; ``map_task`` on Dask installs a worker
    plugin that does the same in every worker, see
    ``casaguard.batch.engines.warmup_plugin``). A worker forked
    from a process that already had a template never shares it: after ``fork``
    the worker starts its own.

    Once ready, the template also warms itself in its first idle moment (see
    ``WARM_ENV``): it runs ``ft`` and ``clearcal`` once on a scratch MS, so
    every later fork starts with CASA's first-use work already done.

    Does nothing when ``$CASAGUARD_MODE`` is ``spawn``.

    Args:
        timeout: seconds to wait for the template to import CASA.
        wait: False returns at once and lets the template start in the background
            (a failure then shows at the first call, which falls back to spawn).

    Returns:
        The template's pid (0 while it starts in the background), or None in spawn mode.

    Raises:
        SetupError: the template could not start (only with ``wait=True``).
    """
    if (os.environ.get(callspec.MODE_ENV) or "").lower() == "spawn":
        return None
    try:
        template = _current_template(spawn.child_environment(), wait=wait)
    except TemplateUnavailable as error:
        raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=error)) from None
    if not wait:
        return template.pid
    if not template.wait_ready(timeout):
        raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=template.failure))
    return template.pid


def template_pid(flavor: str = "casa") -> int | None:
    """The pid of the running template of ``flavor``, or None."""
    template = _templates.get(flavor)
    return template.pid if template is not None and not template.dead else None


def shutdown() -> None:
    """Stop the templates (they also stop by themselves when this process exits)."""
    with _lock:
        templates = list(_templates.values())
        _templates.clear()
        _retry_at.clear()
    for template in templates:
        template.close()


def _forget_after_fork() -> None:
    # A fork of the caller (a multiprocessing worker) must never send on, or read
    # from, its parent's control sockets: it starts templates of its own. Closing
    # its copies also lets the parent's template see EOF when the parent exits.
    global _lock
    for template in _templates.values():
        sock = template._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()  # this copy only: no shutdown, the parent's stays open
    _templates.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(shutdown)
