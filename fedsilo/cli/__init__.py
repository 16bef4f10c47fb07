"""The ``fedsilo`` command line; ``fedsilo.cli.main`` assembles it."""

from fedsilo.cli.main import app, main

__all__ = ["app", "main"]
