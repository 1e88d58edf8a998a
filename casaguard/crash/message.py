"""The one-line human message of a failed call, rendered from its Verdict and the call's facts.

Presentation only, kept apart from the classifier so that deciding a crash's kind
stays free of text formats: the formats are ``errors``' constants, shared with
the tests that match them.
"""

from __future__ import annotations

from casaguard.crash.classify import Verdict
from casaguard.crash.exit_status import describe_status
from casaguard.errors import CASA_ERROR_SUFFIX, CRASH_MESSAGE, EVIDENCE_SUFFIX, LOG_SUFFIX


def crash_message(
    *,
    task: str,
    pid: int | None,
    exit_code: int | None,
    verdict: Verdict,
    log_path: str | None,
    casa_log_empty: bool = False,
    timeout_s: float | None = None,
    exc_type: str | None = None,
) -> str:
    """Render the one-line human message for a failed call."""
    if verdict.kind == "timeout":
        how = f"timed out after {timeout_s:g} s" if timeout_s is not None else "timed out"
        what = "the child's process tree was killed"
    elif verdict.kind in ("casa-error", "python-error"):
        how = f"raised {(exc_type or 'an exception').removeprefix('builtins.')}"
        what = verdict.detail.strip().splitlines()[0] if verdict.detail.strip() else "(no message)"
    elif verdict.kind == "casa-severe":
        how = "returned normally but CASA logged SEVERE"
        what = verdict.detail
    elif verdict.kind == "no-result":
        how, what = "exited", verdict.detail
    else:
        how = f"died with {describe_status(exit_code)}"
        what = verdict.detail
    message = CRASH_MESSAGE.format(task=task, pid=pid, how=how, what=what)
    if verdict.casa_error and verdict.kind not in ("casa-error",):
        first = verdict.casa_error.strip().splitlines()[0]
        message += CASA_ERROR_SUFFIX.format(casa_error=first)
    if verdict.casa_hint:
        message += f" (likely cause: {verdict.casa_hint})"
    if log_path and casa_log_empty:
        message += EVIDENCE_SUFFIX.format(folder=log_path.rpartition("/")[0])
    elif log_path:
        message += LOG_SUFFIX.format(log_path=log_path)
    return message
