"""The ``nfstudy`` command line (also ``python -m study``)."""

from study.cli import export as _export  # noqa: F401  (registers `nfstudy export`)
from study.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
