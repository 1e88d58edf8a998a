"""The ``casaguard`` command: one module per command group; the only code that configures output.

``main`` parses and dispatches; ``output`` owns the terminal (rich progress,
tables, log records above the bar, plain when not a TTY).
"""
