"""``casaguard repair``: a known safe fix for a probe finding, backed up and verified.

(Not named ``repair/``, which would shadow ``casaguard.repair``.) ``report``
plans and applies, ``fixes`` holds one fix per finding code, ``journal`` is the
only door into the journal.
"""
