"""The exception a failed guarded call raises: its facts, its evidence, its message, its class.

Apart from the runner, which decides *that* a call failed (wait, classify,
restore); this module only words it: it keeps the crash evidence, builds the
one-line message, and picks the ``CasaCrash`` subclass -- for a CASA or
Python error in the child, one that is also the child's built-in exception
(``RuntimeError``...), so callers' ``except`` clauses keep working.
"""

from __future__ import annotations

import sys
from typing import Any

from casaguard.crash import classify
from casaguard.crash import evidence as crashdir
from casaguard.crash.message import crash_message
from casaguard.errors import EXCEPTION_FOR_KIND, CasaCrash, ChildError, child_error_class
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox.callspec import CallSpec, ChildHandle
from casaguard.sandbox.lockwait import _Kill, _lock_kill_error


def failure_exception(
    spec: CallSpec,
    job: _job.JobDir,
    handle: ChildHandle,
    exit_code: int | None,
    verdict: classify.Verdict,
    reply: _job.Reply | None,
    output: str,
    casa_log: str,
    elapsed: float,
    kill: _Kill,
) -> CasaCrash:
    kind = "locked" if kill.lock is not None or kill.lock_unknown else verdict.kind
    facts: dict[str, Any] = {
        "kind": kind,
        "task": spec.name,
        "pid": handle.pid,
        "exit_code": exit_code,
        "signal": verdict.signal,
        "detail": verdict.detail,
        "casa_error": verdict.casa_error,
        "severe_lines": verdict.severe_lines,
        "elapsed_s": round(elapsed, 4),
        "signature": verdict.signature,
        "vis": spec.vis,
    }
    kept = crashdir.keep_evidence(
        task=spec.name,
        pid=handle.pid,
        casa_log=job.file(_job.CASA_LOG),
        output_tail=output,
        facts=facts,
    )
    facts["log_path"] = str(kept) if kept else None
    facts["stderr_tail"] = output[-8192:]
    facts["casa_log_tail"] = "\n".join(casa_log.splitlines()[-40:])
    if kind == "locked":
        return _lock_kill_error(spec, handle, kill, facts)
    exc_type = reply.exc_type if reply is not None and not reply.ok else None
    message = crash_message(
        task=spec.name,
        pid=handle.pid,
        exit_code=exit_code,
        verdict=verdict,
        log_path=facts["log_path"],
        casa_log_empty=not casa_log.strip(),
        timeout_s=spec.timeout,
        exc_type=exc_type,
    )
    cls = EXCEPTION_FOR_KIND.get(kind, CasaCrash)
    if issubclass(cls, ChildError):
        if kind in ("casa-error", "python-error") and exc_type:
            # Also the remote built-in (RuntimeError...): callers' `except` clauses keep working.
            cls = child_error_class(cls, exc_type)
        return cls(
            message,
            exc_type=exc_type or "",
            exc_message=(reply.exc_message if reply is not None else "") or verdict.detail,
            original=_original_exception(reply),
            **facts,
        )
    return cls(message, **facts)


def _original_exception(reply: _job.Reply | None) -> BaseException | None:
    """Rebuild the child's exception only when that imports nothing new here.

    Unpickling a casatools exception class would import casatools into the
    caller, which is exactly what casaguard exists to prevent.
    """
    if reply is None or reply.ok or reply.exc_pickle is None:
        return None
    module = reply.exc_type.rpartition(".")[0]
    if module not in ("builtins", "__main__") and module not in sys.modules:
        return None
    try:
        import dill

        original = dill.loads(reply.exc_pickle)
    except Exception:  # noqa: BLE001 - the text and traceback are still there
        return None
    return original if isinstance(original, BaseException) else None
