"""The probe: will CASA survive this MS? (``casaguard.probe``; not named ``probe/``, which
would shadow that function.)

``probe`` runs the checks: the static child (``remote.casacore.static``) reads
the MS, ``rules`` turns facts into ``findings`` (pure; it runs ``table_rules``,
then ``metadata_rules``, then ``table_rules``' storage rules, then
``scratch_rules``), ``host`` checks access, locks and disk in the parent,
``canary`` tries ft + clearcal on a slice copy; ``doctor`` and ``versions``
describe the CASA stack.
"""
