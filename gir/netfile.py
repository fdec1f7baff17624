"""Loading a net file (Python that defines `net` and optionally `config`) with clear errors.

A net file is Python and runs as such when loaded: load only files you trust."""
from __future__ import annotations

import os
import runpy
import traceback
from types import TracebackType

from gir.nn.net import Net
from gir.train.config import TrainConfig


class NetFileError(Exception):
    """A net file that is missing, does not import, or does not define a usable `net`."""


def _line_in(tb: TracebackType | None, path: str) -> int | None:
    """The last line of `path` in a traceback: where the user's file went wrong."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == path:
            line = lineno
    return line


def _user_error(e: BaseException, path: str, full: str) -> NetFileError:
    """The exception the user's code raised, at their line; attrs validators' (message, attribute,
    ...) tuples shortened to the message."""
    line = _line_in(e.__traceback__, full)
    where = f"{path}:{line}" if line else path
    msg = e.args[0] if len(e.args) > 1 and isinstance(e.args[0], str) else str(e)
    return NetFileError(f"{where}: {type(e).__name__} while loading the net file: {msg}")


def load_net_file(path: str) -> tuple[Net, TrainConfig]:
    """Runs the file and returns its `net` and `config` (TrainConfig() when it has none)."""
    if not os.path.exists(path):
        raise NetFileError(f"net file not found: {path}")
    if os.path.isdir(path):
        raise NetFileError(f"{path} is a directory, not a net file")
    full = os.path.abspath(path)
    try:
        ns = runpy.run_path(full, run_name="gir_net")
    except SyntaxError as e:
        where = f"{path}:{e.lineno}" if e.lineno else path
        raise NetFileError(f"{where}: syntax error: {e.msg}") from None
    except SystemExit as e:
        line = _line_in(e.__traceback__, full)
        raise NetFileError(f"{path}:{line}: SystemExit while loading the net file: it called sys.exit({e.code!r})"
                           if line else f"{path}: SystemExit while loading the net file: it called "
                           f"sys.exit({e.code!r})") from None
    except Exception as e:  # the user's code failed: point at their line, not ours
        raise _user_error(e, path, full) from e
    if "net" not in ns:
        raise NetFileError(f"{path} defines no `net`; a net file must set `net = Net(...)`")
    net, config = ns["net"], ns.get("config", TrainConfig())
    if not isinstance(net, Net):
        raise NetFileError(f"{path}: `net` is a {type(net).__name__}, not a gir.nn.Net")
    if not isinstance(config, TrainConfig):
        raise NetFileError(f"{path}: `config` is a {type(config).__name__}, not a gir.train.TrainConfig")
    return net, config
