"""A regression run of the corpus: run reproducers, judge each ``Result``, keep stable facts.

``Result.facts`` holds no pids, paths or times, so the matrices of two
environments diff to exactly the crashes an upgrade fixed or introduced.
Separate from the corpus table: the table says what each reproducer promises;
this runs them and checks the promise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from casaguard.corpus.reproducers import CORPUS, Reproducer
from casaguard.corpus.workspace import Workspace
from casaguard.crash.outcome import Outcome, capture


@dataclass
class Result:
    """A reproducer's run: its outcome and whether it matched the expectation."""

    reproducer: Reproducer
    outcome: Outcome

    @property
    def matched(self) -> bool:
        """The run ended in an expected kind, with the expected evidence."""
        crash = self.outcome.crash
        if crash is None or crash.kind not in self.reproducer.expect:
            return False
        if not self.reproducer.text:
            return True
        evidence = "\n".join(
            [crash.detail, crash.casa_error or "", *crash.severe_lines, crash.stderr_tail]
        )
        return self.reproducer.text in evidence

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts; no pids, paths or times, so runs on two versions diff cleanly."""
        crash = self.outcome.crash
        return {
            "proves": self.reproducer.proves,
            "expect": list(self.reproducer.expect),
            "matched": self.matched,
            "kind": self.outcome.kind,
            "signature": self.outcome.signature,
            "signal": self.outcome.signal,
            "detail": None if crash is None else _stable(crash.detail),
            "casa_error": None
            if crash is None or not crash.casa_error
            else _stable(crash.casa_error),
        }


_WORKSPACE_NAME = re.compile(r"casaguard-corpus-[A-Za-z0-9_]+")
#: tcmalloc and libmalloc name the block's address (``Attempt to free invalid pointer 0x...``).
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def _stable(text: str) -> str:
    """The first line of ``text``, without the workspace's random name or heap addresses."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _ADDRESS.sub("0x?", _WORKSPACE_NAME.sub("casaguard-corpus-*", first))


def run(
    reproducers: Sequence[Reproducer] | None = None,
    *,
    workspace: Workspace | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run reproducers (all by default) in a temporary workspace; return their results.

    Args:
        reproducers: which to run.
        workspace: reuse a workspace (its MSs are cached); a temporary one otherwise.
        on_result: called after each reproducer (progress output).

    Returns:
        One Result per reproducer, in order.
    """
    chosen = list(CORPUS if reproducers is None else reproducers)
    own = workspace is None
    space = workspace or Workspace()
    results = []
    try:
        for reproducer in chosen:
            result = Result(reproducer, capture(reproducer.reproduce, space))
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if own:
            space.close()
    return results
