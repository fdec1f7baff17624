"""The input pipeline: training and evaluation batches made by worker processes (or one background thread) while
the device runs the previous step, in order, at most a fixed number of batches ahead.

A batch is a pure function of (seed, step), so the pipeline holds no state a checkpoint must keep: a run resumed
at step s starts it at s + 1 and sees the batches the uninterrupted run saw. Workers are started with `spawn`
(safe beside the JAX and IREE runtime threads of the main process) from concurrent.futures, which reports a worker
that died instead of waiting for it forever.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Self

import attrs
import numpy as np

from gir.train.augment import Augment, Part
from gir.train.data import DataError, Dataset, FileImages

MAX_DEFAULT_WORKERS = 8
BATCHES_PER_WORKER = 2  # batches in flight per worker process (two for the single thread)
ORPHAN_CHECK_S = 0.5    # how often a worker checks that the main process is still there


def batch_indices(seed: int, n: int, batch: int, step: int) -> np.ndarray:
    """Which training examples 1-based `step` uses: slice (step-1) of the epoch's seeded permutation
    (an epoch is n // batch steps; the last partial batch is dropped)."""
    epoch, i = divmod(step - 1, n // batch)
    return np.random.default_rng([seed, epoch]).permutation(n)[i * batch:(i + 1) * batch]


def default_workers(data: Dataset, augment: Augment | None) -> int:
    """Worker processes when each image costs real work (decoding files, resized crops): one per core but one for
    the main process, at most MAX_DEFAULT_WORKERS; 0 (one background thread) for padded crops of in-memory arrays,
    where starting processes would cost more than it saves."""
    heavy = isinstance(data.train.images, FileImages) or (augment is not None and augment.crop == "resized")
    return min(MAX_DEFAULT_WORKERS, max(1, (os.cpu_count() or 1) - 1)) if heavy else 0


@attrs.frozen(eq=False)
class BatchMaker:
    """Makes the uint8 images and labels of a training step or of a slice of the validation split (with `part`,
    only its rows of each batch: one process's share in a multi-process run); sent once to each worker (a mapped
    dataset pickles as file names and offsets, not pixels)."""

    data: Dataset
    batch: int
    seed: int
    augment: Augment | None
    part: Part | None = None

    def train(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Step `step`'s batch (or its part): its slice of the epoch's permutation, augmented with
        default_rng([seed, 1, step])."""
        train = self.data.train
        idx = batch_indices(self.seed, len(train), self.batch, step)
        images = self.data.batch(train, idx, self.augment, np.random.default_rng([self.seed, 1, step]), self.part)
        return images, train.labels[idx if self.part is None else idx[self.part.rows]]

    def val(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation records [start, start + batch) (or the part's rows of them), padded to a whole batch by
        repeating the last image; the labels are those of all the real records."""
        val = self.data.val
        idx = np.arange(start, min(start + self.batch, len(val)))
        padded = np.concatenate([idx, np.full(self.batch - len(idx), idx[-1])])
        images = self.data.batch(val, padded if self.part is None else padded[self.part.rows])
        return images, val.labels[idx]


_WORKER_MAKER: BatchMaker | None = None


def _start_worker(maker: BatchMaker) -> None:
    """In a worker process: keep the maker; leave Ctrl-C to the main process, which stops the workers itself;
    exit when the main process is gone (killed with SIGKILL, it cannot stop them)."""
    global _WORKER_MAKER
    _WORKER_MAKER = maker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def _run(maker: BatchMaker | None, job: str, key: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One job's images and labels and the seconds it took; a failure becomes a DataError (which always pickles
    back to the main process)."""
    try:
        t0 = time.perf_counter()
        images, labels = getattr(maker or _WORKER_MAKER, job)(key)
        return images, labels, time.perf_counter() - t0
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 (whatever a worker hits must come back as one line)
        raise DataError(f"making the {job} batch {key} failed: {type(e).__name__}: {e}") from None


class Loader:
    """Batches of a BatchMaker, computed ahead on `workers` processes (0: one background thread)."""

    def __init__(self, maker: BatchMaker, workers: int):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.maker, self.workers = maker, workers
        self.ahead = self.batches_in_flight(workers) - 1
        if workers:
            self._pool: cf.Executor = cf.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                initargs=(maker,))
        else:
            self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="gir-data")

    @staticmethod
    def batches_in_flight(workers: int) -> int:
        """The most batches alive at once: those being made ahead, and the one the step is using."""
        return BATCHES_PER_WORKER * max(1, workers) + 1

    def train(self, first: int, last: int) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """The images, labels and making time (s) of steps first..last, in order."""
        return self._ordered("train", range(first, last + 1))

    def val(self) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        """The validation split in batch-sized slices, in order (images, labels, making time)."""
        return self._ordered("val", range(0, len(self.maker.data.val), self.maker.batch))

    def images_per_s(self, seconds_per_batch: float) -> float:
        """What the workers together can make, from the time one of them takes per batch."""
        return self.maker.batch * max(1, self.workers) / seconds_per_batch if seconds_per_batch > 0 else 0.0

    def _ordered(self, job: str, keys: Iterable[int]) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
        keys = iter(keys)
        pending: deque[cf.Future] = deque()
        maker = None if self.workers else self.maker
        try:
            while True:
                try:  # a dead worker breaks the pool: submit and result() both raise it, whichever comes first
                    while len(pending) < self.ahead and (key := next(keys, None)) is not None:
                        pending.append(self._pool.submit(_run, maker, job, key))
                    if not pending:
                        return
                    batch = pending.popleft().result()
                except BrokenProcessPool:
                    raise DataError(f"a data worker process died (out of memory?); try fewer --workers "
                                    f"(now {self.workers}) or a smaller --batch") from None
                yield batch
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        """Stop the workers now, without waiting for batches nobody will read."""
        processes = dict(getattr(self._pool, "_processes", None) or {})  # private: shutdown alone waits for them
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes.values():
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
