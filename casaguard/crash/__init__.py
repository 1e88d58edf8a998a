"""What a dead child means.

``classify`` decides a death's kind (the ``Verdict``) from pure tables:
``heap_checks`` (allocators), ``cxx_terminate`` (C++ runtimes), ``casa_log``
(CASA's own words) and ``stderr_lines`` (rank prefixes, handler banners);
``exit_status`` names a status, ``signatures`` hashes a crash, ``message``
renders it. ``evidence`` (kept crash folders), ``oom`` (cgroup counters),
``outcome`` (a result-or-crash value for tests and batches).
"""
