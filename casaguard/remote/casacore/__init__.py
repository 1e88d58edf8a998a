"""Code that imports python-casacore. Only ever executed in a probe child.

Nothing in the calling process imports these modules (``Ref`` names them by
string), and they refuse to run in a process where casatools is loaded:
python-casacore < 3.8.1 and casatools in one process is a known heap crash.
"""
