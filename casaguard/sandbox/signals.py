"""SIGTERM and SIGHUP to the caller, handled like Ctrl-C while a guarded call runs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from casaguard import events

log = events.get_logger()


#: The signals a batch scheduler or a terminal sends to stop a job (``timeout(1)``,
#: Slurm, Kubernetes: SIGTERM; a closed terminal or ssh session: SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Nesting depth of signals_as_interrupts in the main thread (handlers are installed once).
_signal_depth = 0


class CallerSignalled(BaseException):
    """Raised in the main thread when SIGTERM/SIGHUP arrives during a guarded call.

    A ``BaseException``, like KeyboardInterrupt, so that ``except Exception``
    in between cannot swallow it; ``signals_as_interrupts`` turns it back into
    the signal's default action once the call has cleaned up.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"guarded call interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP stop it the way Ctrl-C does.

    Only in the main thread (the only one Python delivers signals to) and only
    for a signal whose handler is the default: a handler the application
    installed (or SIG_IGN, e.g. under ``nohup``) is left alone -- if it raises,
    the call cleans up as on Ctrl-C. On the first such signal the block gets
    ``CallerSignalled`` (the child tree is killed, the journal restores the MS,
    the job dir is removed by the block's own cleanup); then the previous
    handlers are back and the signal is re-sent, so the process ends with the
    signal's status, as it would have without casaguard. Re-entrant: an inner
    call inside an outer block (a batch) installs nothing.
    """
    global _signal_depth
    if threading.current_thread() is not threading.main_thread() or _signal_depth:
        yield
        return
    previous: dict[int, Any] = {}
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:  # a second signal must not interrupt the cleanup
            raise CallerSignalled(signum)

    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current == signal.SIG_DFL:
            previous[signum] = current
            signal.signal(signum, handler)
    _signal_depth += 1
    try:
        yield
    except CallerSignalled as caught:
        _restore_handlers(previous)
        log.warning("caller_signalled", signal=signal.Signals(caught.signum).name)
        os.kill(os.getpid(), caught.signum)  # default action: the process ends here
        raise  # only if the signal did not end the process
    finally:
        _signal_depth -= 1
        _restore_handlers(previous)
        if received and not isinstance(sys.exc_info()[1], CallerSignalled):
            # A signal that landed after the block had finished its work still ends the process.
            os.kill(os.getpid(), received[0])


def _restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
