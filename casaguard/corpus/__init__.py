"""Real crash reproducers and simulated MSs.

``reproducers`` (the corpus table: what each proves), ``scenarios`` (how each crash is
made), ``regression`` (run them, judge the results), ``workspace`` (simulated MSs per run),
``crashers`` (the crash primitives), ``casacore_cache`` (the clash's python-casacore) and
``simulate`` (simulated MSs and component lists).
"""
