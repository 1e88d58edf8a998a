"""What a dead child means: ``classify`` (pure tables), ``evidence`` (kept crash folders),
``oom`` (cgroup counters), ``outcome`` (a result-or-crash value for tests and batches).
"""
