"""The public drop-ins: ``ft``, ``clearcal``, ``run_task``, ``call`` -- the one write path.

Every guarded task goes through ``tasks.run_task``: parameters checked against
the installed casatasks (``params``, read from its source, never imported), the
MS pre-flight, the journal, then the sandbox. ``complist`` builds component
lists in a child so the caller never imports casatools.
"""
