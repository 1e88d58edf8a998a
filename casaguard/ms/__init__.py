"""Parent-side facts about an MS, never through casacore: ``checks`` (is it an MS, is it
writable), ``locks`` (the one ``/proc/locks`` reader), ``access`` (credentials CASA will have).
"""
