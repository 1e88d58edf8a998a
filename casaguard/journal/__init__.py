"""Nothing lost: the journal hook the sandbox calls around a write (``hook``).

Snapshot in the child, restore in the parent, trust rules for orphaned
journals; see ``hook``'s docstring and docs/journal.md.
"""
