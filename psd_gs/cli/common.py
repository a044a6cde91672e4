"""What the command line's modules share (``main`` and ``batch`` both import it; neither imports the other's
internals): exit codes, the one-line error, the parser and help formatting, the device check."""

from __future__ import annotations

import argparse
import sys
import textwrap

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 130


class CLIError(Exception):
    """An expected failure whose message tells the user what to fix (one line, exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one ``error: ...`` line after the usage, like every other CLI error here."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message} (see: {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; descriptions are wrapped by ``para``."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32)


def para(text: str) -> str:
    return textwrap.fill(text, width=100)


def check_device(device: str) -> None:
    from ..device import resolve_device

    try:
        resolve_device(device)
    except ValueError:
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto") from None
