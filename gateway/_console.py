"""The lines a gateway prints for people and scripts (listening, ready, stopped)."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["say"]


def say(line: str, stream: TextIO | None = None) -> None:
    """One line to stdout (or `stream`) in one write: workers share the supervisor's stdout, and
    print() writes the text and its newline apart when Python runs unbuffered."""
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()
