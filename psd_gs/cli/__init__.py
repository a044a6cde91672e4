"""The command line: ``python -m psd_gs COMMAND`` (``main``: the parser and the single-run commands;
``batch``: batch and evaluate-suite; ``common``: what both share)."""

from .main import main

__all__ = ["main"]
