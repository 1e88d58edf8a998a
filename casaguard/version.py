"""casaguard's version: a leaf, so any module can name it without importing the package face.

``pyproject.toml`` reads it from here (``tool.setuptools.dynamic``): one place to bump.
"""

__version__ = "0.1.0"
