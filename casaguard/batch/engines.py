"""Engines that run one function over many items: local threads, any Executor, Dask.

Each engine submits ``batch_item.execute(run, index, item)`` per item and gathers
the Outcomes as they finish. ``run`` is whatever the batch API built (a
guarded task call, a sandboxed function, a probe): the engines know nothing of
CASA. Local threads are enough because every item's isolation is its own
sandbox child; a Dask worker likewise only drives sandbox children, so a CASA
crash never takes a worker down.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from casaguard import events
from casaguard.batch.item import ItemOutcome, execute, traceback_text
from casaguard.errors import InvalidInput, SetupError
from casaguard.sandbox import signals

if TYPE_CHECKING:
    import distributed

log = events.get_logger()

#: Progress callback: ``progress(outcome, done, total)``, called in the caller's
#: thread each time an item finishes (in completion order, not input order).
Progress = Callable[[ItemOutcome, int, int], None]

DASK_MISSING = "the Dask engine needs the 'distributed' package: pip install 'casaguard[dask]'"
SCHEDULER_UNREACHABLE = "cannot reach the Dask scheduler at {address}: {error}"


def default_jobs() -> int:
    """How many guarded calls the local engine runs at once: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_batch(
    run: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    name: str,
    executor: Any,
    jobs: int | None,
    progress: Progress | None,
) -> list[ItemOutcome]:
    """Run ``run(item)`` for every item on the chosen engine; one outcome per item, in order.

    Args:
        run: the per-item callable (picklable by reference for Dask and process pools).
        items: the inputs.
        name: what the batch runs, for the ``batch_finished`` event.
        executor: None (local threads), a ``concurrent.futures.Executor``, a
            ``distributed.Client``, or a Dask scheduler address.
        jobs: local engine only: calls at once (default: the usable CPUs).
        progress: called as ``progress(outcome, done, total)`` when an item finishes.

    Returns:
        One ItemOutcome per item, in input order.

    Raises:
        InvalidInput: ``jobs`` < 1, an unknown kind of executor, an unreachable scheduler.
        SetupError: a Dask engine was asked for but ``distributed`` is not installed.
        KeyboardInterrupt: after the local engine's running children were killed.
    """
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise InvalidInput(f"jobs must be a positive integer, got {jobs!r}")
    if not items:
        return []
    batch_id = f"casaguard-{name}-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    if executor is None:
        engine = "local"
        outcomes = _run_local(run, items, jobs or default_jobs(), progress)
    elif isinstance(executor, concurrent.futures.Executor):
        engine = type(executor).__name__
        outcomes = _run_executor(run, items, executor, progress)
    elif isinstance(executor, str) or _is_dask_client(executor):
        engine = "dask"
        outcomes = _run_dask(run, items, executor, progress, batch_id)
    else:
        raise InvalidInput(
            "executor must be None, a concurrent.futures.Executor, a distributed.Client "
            f"or a Dask scheduler address, got {type(executor).__name__}"
        )
    failed = sum(not o.ok for o in outcomes)
    log.info(
        "batch_finished",
        batch=batch_id,
        task=name,
        engine=engine,
        items=len(outcomes),
        ok=len(outcomes) - failed,
        failed=failed,
        elapsed_s=round(time.monotonic() - started, 4),
    )
    return outcomes


class _Gatherer:
    """Collects outcomes as they finish, reports progress, returns them in input order."""

    def __init__(self, items: Sequence[Any], progress: Progress | None) -> None:
        self.items = items
        self.progress = progress
        self.outcomes: list[ItemOutcome | None] = [None] * len(items)
        self.done = 0

    def add(self, index: int, outcome: ItemOutcome) -> None:
        self.outcomes[index] = outcome
        self.done += 1
        if self.progress is not None:
            self.progress(outcome, self.done, len(self.items))

    def engine_failure(self, index: int, error: Exception) -> None:
        """The engine lost the item (e.g. a Dask worker died): the item still gets an outcome."""
        self.add(
            index,
            ItemOutcome(
                index=index,
                input=self.items[index],
                error=error,
                traceback=traceback_text(error),
            ),
        )

    def result(self) -> list[ItemOutcome]:
        assert all(o is not None for o in self.outcomes)
        return [o for o in self.outcomes if o is not None]


def _run_local(
    run: Callable[[Any], Any], items: Sequence[Any], jobs: int, progress: Progress | None
) -> list[ItemOutcome]:
    cancel = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(jobs, len(items)), thread_name_prefix="casaguard-batch"
    )
    futures: dict[concurrent.futures.Future[ItemOutcome], int] = {}
    # SIGTERM / SIGHUP reach only the main thread, like Ctrl-C: handled alike.
    with signals.signals_as_interrupts():
        try:
            for index, item in enumerate(items):
                futures[pool.submit(execute, run, index, item, cancel)] = index
            return _gather(concurrent.futures.as_completed(futures), futures, items, progress)
        except BaseException:
            # Ctrl-C reaches only this thread: tell the others to kill their children.
            cancel.set()
            for future in futures:
                future.cancel()
            log.warning("batch_cancelled", running=sum(f.running() for f in futures))
            raise
        finally:
            pool.shutdown(wait=True)


def _run_executor(
    run: Callable[[Any], Any],
    items: Sequence[Any],
    executor: concurrent.futures.Executor,
    progress: Progress | None,
) -> list[ItemOutcome]:
    # A thread executor shares our memory: its threads can see a cancel event.
    threaded = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    cancel = threading.Event() if threaded else None
    futures: dict[concurrent.futures.Future[ItemOutcome], int] = {}
    try:
        for index, item in enumerate(items):
            # Outcomes from another process travel pickled: remote=True keeps them picklable.
            future = executor.submit(execute, run, index, item, cancel, remote=not threaded)
            futures[future] = index
        return _gather(concurrent.futures.as_completed(futures), futures, items, progress)
    except BaseException:
        if cancel is not None:
            cancel.set()
        for future in futures:
            future.cancel()
        raise


def _gather(
    completed: Iterable[Any],
    futures: Mapping[Any, int],
    items: Sequence[Any],
    progress: Progress | None,
) -> list[ItemOutcome]:
    """Collect futures (concurrent.futures or Dask) as they complete into input order."""
    gatherer = _Gatherer(items, progress)
    for future in completed:
        index = futures[future]
        try:
            gatherer.add(index, future.result())
        except Exception as error:  # noqa: BLE001 - BrokenProcessPool, KilledWorker: still one outcome
            gatherer.engine_failure(index, error)
    return gatherer.result()


def _is_dask_client(executor: Any) -> bool:
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(executor, distributed.Client)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise SetupError(DASK_MISSING) from error
    return distributed


def _run_dask(
    run: Callable[[Any], Any],
    items: Sequence[Any],
    executor: distributed.Client | str,
    progress: Progress | None,
    batch_id: str,
) -> list[ItemOutcome]:
    distributed = _import_distributed()
    with _dask_client(distributed, executor) as client:
        _install_warmup(client, distributed)
        futures = {
            client.submit(
                execute, run, index, item, remote=True, pure=False, key=f"{batch_id}-{index}"
            ): index
            for index, item in enumerate(items)
        }
        try:
            return _gather(distributed.as_completed(list(futures)), futures, items, progress)
        except BaseException:
            # Dask cannot stop a running task: its guarded call ends at its own timeout.
            client.cancel(list(futures))
            raise


#: The name of casaguard's worker plugin on a Dask cluster.
WARMUP_PLUGIN = "casaguard-warmup"


def warmup_plugin(distributed: Any) -> Any:
    """A Dask ``WorkerPlugin`` that starts each worker's warm template when the worker starts.

    ``map_task`` / ``map_call`` / ``map_probe`` install it on their client
    (idempotent: once per cluster; workers that join later get it too), so a
    worker's first guarded call does not pay CASA's import on top of its own.
    By hand: ``client.register_plugin(warmup_plugin(distributed))``.
    """

    class CasaguardWarmup(distributed.WorkerPlugin):  # type: ignore[misc]  # Any base
        name = WARMUP_PLUGIN
        idempotent = True

        def setup(self, worker: Any) -> None:
            from casaguard.sandbox.template.client import warmup

            warmup(wait=False)  # in the background: the worker is ready at once

    return CasaguardWarmup()


def _install_warmup(client: Any, distributed: Any) -> None:
    try:
        client.register_plugin(warmup_plugin(distributed))
    except (AttributeError, TypeError, ValueError) as error:  # an old distributed: calls still work
        log.warning("dask_warmup_not_installed", reason=str(error))


@contextlib.contextmanager
def _dask_client(distributed: Any, executor: Any) -> Iterator[Any]:
    """Use the caller's Client as is; open (and afterwards close) one for an address."""
    if not isinstance(executor, str):
        yield executor
        return
    try:
        client = distributed.Client(executor, timeout="10s")
    except (OSError, TimeoutError, ValueError) as error:
        raise InvalidInput(SCHEDULER_UNREACHABLE.format(address=executor, error=error)) from error
    try:
        yield client
    finally:
        client.close()
