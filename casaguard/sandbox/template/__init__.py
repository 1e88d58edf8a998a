"""The warm template: one process that imported CASA once and forks a fresh child per call.

A fresh interpreter pays ~1.2-1.9 s to import casatools and casatasks; ``ft``
on a small MS takes ~20 ms. The template pays the import once, never runs a
task itself, and ``fork``s a child per guarded call, so every call still
starts from the template's pristine heap and dies alone::

    caller process                      template                        fork (one per call)
    (never imports CASA)                python -P -c casaguard.sandbox.template.server
    --------------------                ---------------------------     -------------------
    keeper thread: Popen ------------>  pdeathsig; import casatools,
      (own session)                     casatasks; OpenMP -> 1 thread;
                                        gc.freeze()
      <--------------------- {"ready"}  fork the spare ahead of time -->  setsid, name, pdeathsig,
                                        (first idle 0.5 s: warm-up,        "!", then waits for a job
                                         a warm spare replaces it)
    run(): JobDir request.pkl
    {"op":"fork", job, env} -------->   job -> the spare's pipe ------->  environ = caller's, dup2
                                        wait "!" <=5 s <-------- "!" --  fd 1/2 -> output.log,
      <------------ {"id", pid, alive}  (silent? SIGKILL it,             OpenMP threads = caller's;
    wait on pidfd_open(pid)              answer alive=false: the          run_job(): reply.pkl,
                                         caller spawns instead)           os._exit / or crashes
                                        fork the next spare (the caller
                                        no longer waits on it)
                                        SIGCHLD: waitpid
      <-------------- {"exit", status}
    statuses routed by pid to the waiting thread

The spare takes the fork itself (~12-40 ms for a 300 MB template) off the
call's critical path; with no spare ready (a second call at once, a spare that
died idle) the template forks on the spot, as the diagram's right column does
after the fork. The warm-up (``warm.run_tasks``) takes CASA's first-use work off
every fork's first task; OpenMP is why the template runs it single-threaded (see
``warm.settle_openmp_in_template``). After it, the template learns which pages a
fork's first task writes, and each idle spare makes its own copies of them
before a job arrives (``prefault``): the copy-on-write faults leave the call.

Fork safety. casatools starts gRPC threads at import (``default-executo``,
``resolver-execut``, ``grpc_global_tim``, ``grpcpp_sync_ser``), and forking a
multi-threaded process copies any lock another thread held at that instant,
held forever. We fork anyway, because in practice the fork never touches what
those threads lock: glibc's ``fork`` takes and re-initialises every malloc
arena lock (so the heap is consistent in the child), CPython re-initialises
the GIL, import lock and threading state after ``os.fork``, and the child
never calls into gRPC; it runs one task and leaves through ``os._exit``
without running a single C++ destructor. ``bench/bench_isolation.py`` shows
it: 1,000 consecutive guarded calls through the template, each under a
timeout, none hung. The residual risk is bounded, not ignored: the fork must
say "alive" on a pipe within ``HANDSHAKE_S`` (after its output is redirected
and its parent-death signal armed); a fork that does not is SIGKILLed and
that call runs in a fresh spawned interpreter instead, with a
``template_fork_unresponsive`` event; a stall after the handshake is a hang
like any other, ended by the call's ``timeout``. The alternatives cost more than they
save: forking before the threads start means forking before CASA is imported
(no speed-up), and a template that re-execs is a spawn.

Lifetime. The template starts lazily on the first call in template mode (or
``warmup()``), from a dedicated keeper thread, so its parent-death signal is
tied to a thread that lives as long as the caller process (PR_SET_PDEATHSIG
fires when the *thread* that forked a process exits). It exits when its
control socket reaches EOF or its parent dies, and its forks die with it. If
it dies, the next call starts a new one; while it cannot be started, calls
fall back to spawn mode with a ``template_fallback`` event (or raise
``SetupError`` when ``mode="template"`` was asked for explicitly).

What the template holds of the caller: nothing. It is started with
``python -P -c "import casaguard.sandbox.template.server ..."`` (no caller cwd on
``sys.path``, no ``__main__`` re-run) and imports only casatools, casatasks
and casaguard's child modules. It never imports python-casacore, and its
forks refuse to (``ImportError``, ``CASACORE_IN_TEMPLATE``): they hold
casatools, and the two must never share a process -- such calls use the
second flavor of template, ``flavor="casacore"`` (``flavors.FLAVORS``): a process that
imported python-casacore and refuses casatools, which serves the probe's static
child (a fork instead of a fresh interpreter importing numpy and casacore), or
``mode="spawn"``. Each fork takes the caller's current environment and import
path from the fork request and the caller's cwd from the job's request, so a
call sees what a spawned child would (except variables CASA read at import).

Where the pieces live. In the caller: ``client`` (which template serves a
call, the launcher the runner uses, ``warmup``, ``shutdown``) over
``connection`` (one running template, seen from the caller); in the template:
``server`` (its entry point and loop, the spare, the handshake) over ``forked``
(what a fork does, from ``os.fork`` to the job) and ``warm`` (the warm-up and
OpenMP's thread count); ``flavors`` holds what both sides share.
"""
