"""Code that runs only inside a sandbox child; the folder name is the import rule.

``remote.casa`` may import casatools/casatasks, ``remote.casacore`` may import
python-casacore. The parent never imports either: it names their functions by
string (``Ref``) and a child imports them.
"""
