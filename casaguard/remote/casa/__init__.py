"""Code that runs only inside a CASA child process.

Every module in this subpackage may import ``casatools`` / ``casatasks``.
Nothing outside ``remote`` imports these modules at module level: the parent
only names their functions (``casaguard.remote.casa.tasks.run_casatask``) in a
request, and the child imports them after its stdio is redirected.
"""
