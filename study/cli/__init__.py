"""The ``nfstudy`` command line (also ``python -m study``)."""

from study.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
