"""Warnings for the user: one line each on stderr, in the same voice as gir's errors."""
from __future__ import annotations

import sys


def warn(message: str) -> None:
    """`gir: warning: MESSAGE` on stderr; the work goes on."""
    print(f"gir: warning: {message}", file=sys.stderr)
