"""One run over several processes and hosts: JAX's multi-process runtime (jax.distributed). Every process runs
the same loop on a global Mesh of all processes' devices and feeds only its rows of each global batch; XLA's
collectives (gloo on CPUs) make BN statistics, the loss and the gradients global.

A process whose peer dies sees its next collective fail; it stops with one line and exits at once, skipping JAX's
shutdown barrier, which would wait for the lost peer and then abort with a C++ stack trace.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time

import attrs

INIT_TIMEOUT_S = 120   # how long a process waits for all others to join at start (they compile nothing before)
HEARTBEAT_S = 15       # a peer silent this long (hung, dead without closing its sockets, host gone) is dead


class DistributedError(Exception):
    """Processes that cannot form a run: a bad address, no launcher environment, a peer that never joined or died."""


@attrs.frozen
class Cluster:
    """Where this process stands among the run's processes; None: detected from the launcher's environment the way
    jax.distributed.initialize does (SLURM, Open MPI, Kubernetes, JAX_COORDINATOR_ADDRESS, ...)."""

    coordinator: str | None = None
    processes: int | None = None
    process_id: int | None = None


def check_address(address: str) -> str:
    """HOST:PORT with a port in 1..65535 (IPv6 hosts in brackets), else a ValueError saying so."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"wants HOST:PORT (e.g. node0:29500), got {address!r}")
    return address


def start(cluster: Cluster) -> tuple[int, int]:
    """Joins the run (process 0 also serves the coordinator) and returns (process id, process count). Must come
    before anything else touches JAX's devices."""
    import jax

    try:
        jax.distributed.initialize(cluster.coordinator, cluster.processes, cluster.process_id,
                                   initialization_timeout=INIT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_S)
    except ValueError as e:  # jax's message when neither flags nor a launcher's environment name a value
        raise DistributedError(f"--distributed: {e} (no launcher environment such as SLURM or Open MPI was found; "
                               f"give --coordinator, --processes and --process-id)") from None
    except jax.errors.JaxRuntimeError as e:
        raise DistributedError(f"process {cluster.process_id} could not join the run at {cluster.coordinator} within "
                               f"{INIT_TIMEOUT_S} s ({first_line(e)}); start all {cluster.processes} processes with "
                               f"the same --coordinator") from None
    return jax.process_index(), jax.process_count()


def running() -> bool:
    """Whether this process joined a multi-process run (checked without importing JAX)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def leave(code: int) -> None:
    """Exits now with `code`, without JAX's shutdown barrier (it waits for every peer, and aborts when one is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---- the supervisor: JAX's own aborts as one line ------------------------------------------------------------------
# When the coordination service fails (process 0 gone, a peer silent past HEARTBEAT_S), JAX's client aborts the
# process from C++ with its log lines and a stack trace; Python never gets to say what happened. So a process of a
# multi-process run is a small parent that runs the real `gir train` as its child, relays the child's output, holds
# back native log lines, and when the child aborts that way prints one line instead.

SUPERVISED = "GIR_SUPERVISED_CHILD"   # set in the child's environment: it trains instead of supervising
ABORT_MARK = b"JAX distributed service detected fatal errors"
NATIVE_LOG = re.compile(rb"^([IWEF]\d{4} \d\d:\d\d:\d\d|\*\*\* |PC: @|\s+@ |E0000 |F0000 |Check failed)")
ORPHAN_CHECK_S = 0.5
PR_SET_PDEATHSIG = 1   # Linux prctl option


def supervised() -> bool:
    """Whether this process is the supervised child (or needs no supervisor)."""
    return os.environ.get(SUPERVISED) == "1"


def exit_with_parent() -> None:
    """In the child: die with the supervisor (killed, it cannot stop its child), as a process of the run would have:
    the kernel's parent-death signal on Linux (no Python thread needs the GIL for it), else a watching thread."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:   # gone before the signal was armed
        os._exit(1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def supervise(argv: list[str], who: str, resume_hint: str) -> int:
    """Runs `gir ARGV` as a child in its own process group (Ctrl-C and SIGTERM reach it once, through here) and
    returns its exit status; a JAX abort becomes one line naming `who` and how to resume."""
    child = subprocess.Popen([sys.executable, "-m", "gir", *argv], env={**os.environ, SUPERVISED: "1"},
                             stderr=subprocess.PIPE, process_group=0)
    forward = lambda signum, frame: child.send_signal(signum)
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        native, said = _relay(child.stderr, sys.stderr.buffer)
        code = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if any(ABORT_MARK in line for line in native):
        if said:   # the child saw the failure first (a collective with a lost peer) and said so
            return 1
        print(f"gir: error: {who}: the run's coordination failed (a process of the run died, or stopped answering "
              f"for {HEARTBEAT_S} s); stopped. {resume_hint}", file=sys.stderr)
        return 1
    if code == 0:   # a failed run's own line says what happened; JAX's log about the lost peer would bury it
        sys.stderr.buffer.write(b"".join(native))
        sys.stderr.flush()
    return code if code >= 0 else 128 - code


def _relay(source, sink) -> tuple[list[bytes], bool]:
    """Copies `source` to `sink` as it comes (progress bars redraw with \r), except native log messages (a log line
    and the lines continuing it), which it returns, with whether gir's own error line went through."""
    native: list[bytes] = []
    said = False
    in_native = False
    pending = b""
    while chunk := source.read1(65536):
        pending += chunk
        *pieces, pending = re.split(rb"(?<=[\r\n])", pending)
        for piece in pieces:
            starts = bool(NATIVE_LOG.match(piece)) or ABORT_MARK in piece
            continues = in_native and not piece.startswith((b"gir", b"Traceback")) and not piece.endswith(b"\r")
            in_native = starts or continues
            if in_native:
                native.append(piece)
            else:
                sink.write(piece)
                said = said or piece.startswith(b"gir: error:")
        sink.flush()
    sink.write(pending)
    sink.flush()
    return native, said
