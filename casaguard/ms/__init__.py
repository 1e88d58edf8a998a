"""Parent-side facts about an MS, never through casacore: ``checks`` (is it an MS, is it
writable), ``locks`` (the one ``/proc/locks`` reader), ``lock_files`` (opening a
``table.lock`` without dropping the caller's own locks), ``access`` (credentials CASA will have).
"""
