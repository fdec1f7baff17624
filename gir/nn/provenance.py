"""Finding the user's source line: the innermost stack frame outside the gir package."""
from __future__ import annotations

import os
import sys
from types import FrameType

import gir

_GIR_DIR = os.path.dirname(os.path.abspath(gir.__file__)) + os.sep


def _is_internal(filename: str) -> bool:
    return filename.startswith(_GIR_DIR) or filename.startswith("<attrs generated") or filename.startswith("<frozen")


def user_frame(skip: int = 1) -> tuple[FrameType | None, int]:
    """The innermost frame outside gir and its depth (frames below it), or (None, 0)."""
    f = sys._getframe(skip)
    while f is not None and _is_internal(os.path.abspath(f.f_code.co_filename)):
        f = f.f_back
    if f is None:
        return None, 0
    depth, g = 0, f
    while g is not None:
        depth += 1
        g = g.f_back
    return f, depth


def frame_depth() -> int:
    """The depth of the caller's frame, to compare with `user_frame`'s."""
    depth, g = 0, sys._getframe(1)
    while g is not None:
        depth += 1
        g = g.f_back
    return depth


def short_path(filename: str) -> str:
    """A file name relative to the working directory when it lies below it (stable in messages)."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel
