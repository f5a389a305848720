"""The command line as the user typed it, for run folders and reports."""

from __future__ import annotations

import shlex
import sys


def command_line() -> str:
    """``pldrop <args>``, quoted so it can be pasted back into a shell."""
    return " ".join(["pldrop", *map(shlex.quote, sys.argv[1:])])
