"""One guarded call: a child process per CASA call, death turned into a typed exception.

See ``runner``'s docstring for the picture of caller, warm template and fork,
and docs/architecture.md for the whole path of a call.
"""
