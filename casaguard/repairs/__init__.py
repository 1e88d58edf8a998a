"""``casaguard repair``: a known safe fix for a probe finding, backed up and verified.

(Not named ``repair/``, which would shadow ``casaguard.repair``.) ``run`` holds
``repair()``: probe, plan, apply, verify, roll back. ``plan`` maps finding codes
to fixes (or says why there is none), ``report`` is the answer it fills in;
``fix`` says what every fix is, and ``file_fixes``, ``column_fixes`` and
``journal_fixes`` hold the fixes by what they change; ``journal`` is the only
door into the journal.
"""
