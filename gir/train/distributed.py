"""One run over several processes and hosts: JAX's multi-process runtime (jax.distributed). Every process runs
the same loop on a global Mesh of all processes' devices and feeds only its rows of each global batch; XLA's
collectives (gloo on CPUs) make BN statistics, the loss and the gradients global.

A process whose peer dies sees its next collective fail; it stops with one line and exits at once, skipping JAX's
shutdown barrier, which would wait for the lost peer and then abort with a C++ stack trace.
"""
from __future__ import annotations

import os
import sys

import attrs

INIT_TIMEOUT_S = 120   # how long a process waits for all others to join at start (they compile nothing before)
HEARTBEAT_S = 60       # a peer silent this long (hung, or its host gone) is dead: the survivors abort


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
