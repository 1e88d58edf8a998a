"""The warm templates' flavours and what client and server share: names, exit codes, limits."""

from __future__ import annotations

from dataclasses import dataclass

#: A fork must say "alive" within this many seconds, or it is killed and the call spawned.
HANDSHAKE_S = 5.0


#: The template must be ready (CASA imported) within this many seconds.
START_TIMEOUT_S = 120.0


#: After a failed start, calls use spawn mode for this long before the next attempt.
RETRY_AFTER_S = 30.0


#: Exit code of a fork that failed before running the request (e.g. a bad job path).
EXIT_FORK_FAILED = 73


#: The kernel name (``/proc/PID/comm``) of a fork running a call.
FORK_NAME = b"casaguard-call"


#: The kernel name of the template's pre-forked spare, idle until a call arrives.
SPARE_NAME = b"casaguard-spare"


#: The template's scratch cwd while it imports CASA (removed once it is warm).
SCRATCH_PREFIX = "casaguard-template-"


CASACORE_IN_TEMPLATE = (
    "python-casacore cannot be imported in a fork of the warm CASA template: casatools is "
    "loaded there and the two must never share a process; run this call with mode='spawn' "
    "or flavor='casacore'"
)


CASA_IN_CASACORE_TEMPLATE = (
    "casatools cannot be imported in a fork of the warm python-casacore template: the two "
    "must never share a process; run this call with flavor='casa'"
)


@dataclass(frozen=True)
class Flavor:
    """What one kind of template imports, and what its forks must never import."""

    warm: tuple[str, ...]
    refuse: tuple[str, ...]
    refusal: str


#: ``casa`` serves CASA tasks; ``casacore`` serves python-casacore code (the static
#: probe). Each refuses the other's library: the two heap-clash in one process.
FLAVORS: dict[str, Flavor] = {
    "casa": Flavor(
        warm=(
            "casatools",
            "casatasks",
            "casaguard.sandbox.child",
            "casaguard.remote.casa.logs",
            "casaguard.remote.casa.tasks",
            "dill",
        ),
        refuse=("casacore",),
        refusal=CASACORE_IN_TEMPLATE,
    ),
    "casacore": Flavor(
        warm=(
            "numpy",
            "casacore.tables",
            "casaguard.sandbox.child",
            "casaguard.remote.casacore.static",
            "dill",
        ),
        refuse=("casatools", "casatasks"),
        refusal=CASA_IN_CASACORE_TEMPLATE,
    ),
}


#: After this many seconds without a request (and no call running), the template
#: warms itself once: see ``warm.run_tasks`` and ``server._Server.warm``.
WARM_IDLE_S = 0.5


#: ``0`` turns the warm-up off (for comparing; forks then pay CASA's first-use costs).
WARM_ENV = "CASAGUARD_TEMPLATE_WARM"
