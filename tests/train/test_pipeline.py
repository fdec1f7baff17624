"""The input pipeline: batches are pure functions of (seed, step) whichever process makes them; worker failures
come back as one DataError; resident memory does not grow with the number of images."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from gir.train.augment import Augment, Part, default_augment
from gir.train.data import DataError, load_dataset
from gir.train.pipeline import BatchMaker, Loader, batch_indices, default_workers


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", 16, 1, 10)


def test_batches_are_seeded_permutations_and_augmentation_keeps_labels(digits16):
    data = digits16
    n, b = len(data.train), 32
    spe = n // b
    epoch1 = np.concatenate([batch_indices(0, n, b, s) for s in range(1, spe + 1)])
    assert len(set(epoch1)) == spe * b                                  # no example twice in an epoch
    assert not np.array_equal(batch_indices(0, n, b, 1), batch_indices(0, n, b, spe + 1))   # a new order per epoch
    assert np.array_equal(batch_indices(0, n, b, 7), batch_indices(0, n, b, 7))
    idx = batch_indices(0, n, b, 3)
    x1, y1 = BatchMaker(data, b, 0, default_augment(16)).train(3)
    x2, _ = BatchMaker(data, b, 0, default_augment(16)).train(3)
    plain, y0 = BatchMaker(data, b, 0, None).train(3)
    assert np.array_equal(y1, data.train.labels[idx]) and np.array_equal(y0, y1)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, plain) and x1.dtype == np.uint8
    np.testing.assert_array_equal(plain, data.batch(data.train, idx))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_gives_the_makers_batches_in_order(digits16, workers):
    """From any first step (a resumed run starts mid-epoch), worker processes or the thread: the same bytes."""
    maker = BatchMaker(digits16, 32, 7, default_augment(16))
    with Loader(maker, workers) as loader:
        got = list(loader.train(40, 52))
        val = list(loader.val())
    assert len(got) == 13
    for step, (images, labels, seconds) in zip(range(40, 53), got):
        assert seconds > 0
        want_images, want_labels = maker.train(step)
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
    n = len(digits16.val)
    assert [len(y) for _, y, _ in val] == [32] * (n // 32) + [n % 32]
    assert all(x.shape == (32, 1, 16, 16) for x, _, _ in val)  # the last slice padded to a whole batch
    np.testing.assert_array_equal(np.concatenate([y for _, y, _ in val]), digits16.val.labels)
    np.testing.assert_array_equal(np.concatenate([x[:len(y)] for x, y, _ in val]),
                                  digits16.batch(digits16.val, np.arange(n)))


def test_each_part_of_a_batch_is_made_as_in_the_whole_batch(digits16, tmp_path):
    """A process of a multi-process run makes only its rows of each batch (files of other rows are opened for their
    size, not decoded); together the parts are the one-process batch, augmentation included."""
    folder = tmp_path / "f"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(24):
            (folder / split / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))   # crop draws depend on each image's size
            Image.fromarray(rng.integers(0, 255, (*size, 3), np.uint8)).save(folder / split / f"c{i % 3}" / f"{i}.png")
    files = load_dataset(f"imagefolder:{folder}", 16, 3)
    for data, augment in ((digits16, Augment(crop="pad", padding=2, flip=True)), (digits16, Augment(crop="resized")),
                          (files, Augment(crop="resized")), (files, None)):
        whole = BatchMaker(data, 8, 0, augment)
        parts = [BatchMaker(data, 8, 0, augment, Part(a, a + 2, 8)) for a in range(0, 8, 2)]
        for step in (1, 2):
            made = [p.train(step) for p in parts]
            for got, want in zip((np.concatenate([m[0] for m in made]), np.concatenate([m[1] for m in made])),
                                 whole.train(step)):
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.concatenate([p.val(0)[0] for p in parts]), whole.val(0)[0])


def test_default_workers(digits16, tmp_path):
    assert default_workers(digits16, default_augment(16)) == 0        # padded crops of an in-memory array
    heavy = default_workers(digits16, Augment(crop="resized"))
    assert heavy == min(8, max(1, (os.cpu_count() or 1) - 1))
    folder = tmp_path / "f"
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / split / "a" / "0.png")
    assert default_workers(load_dataset(f"imagefolder:{folder}", 8, 3), None) == heavy   # files to decode


def test_a_corrupt_image_in_a_worker_is_one_data_error_naming_it(tmp_path):
    folder = tmp_path / "f"
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (20, 10), (i, 0, 0)).save(folder / split / "a" / f"{i}.jpg")
    (folder / "train" / "a" / "5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = load_dataset(f"imagefolder:{folder}", 8, 3)
    with Loader(BatchMaker(data, 4, 0, Augment(crop="resized")), 1) as loader:
        with pytest.raises(DataError, match=f"^{folder}/train/a/5.jpg: cannot read image"):
            list(loader.train(1, 4))


class DyingMaker(BatchMaker):
    """Kills its worker process on step 3, as the kernel's out-of-memory killer would."""

    def train(self, step: int):
        if step == 3:
            os._exit(9)
        return super().train(step)


def test_a_worker_that_dies_stops_the_run_with_one_line(digits16):
    with Loader(DyingMaker(digits16, 32, 0, None), 1) as loader:
        with pytest.raises(DataError, match=r"a data worker process died .*--workers \(now 1\)"):
            list(loader.train(1, 6))


def test_a_worker_that_died_while_the_step_ran_stops_the_run_with_one_line(digits16):
    """The pool is already broken when the next batch is asked for, so submitting it is what fails."""
    with Loader(DyingMaker(digits16, 32, 0, None), 1) as loader:
        batches = loader.train(1, 40)
        next(batches), next(batches)
        deadline = time.monotonic() + 60
        while not loader._pool._broken and time.monotonic() < deadline:  # private: the pool's own broken flag
            time.sleep(0.05)
        with pytest.raises(DataError, match=r"a data worker process died"):
            list(batches)


def test_mapped_datasets_pickle_as_file_names_not_pixels(tmp_path):
    """What each worker receives: a few hundred bytes plus the labels, for an npz of 24 MB."""
    x = np.random.default_rng(0).integers(0, 255, (2000, 3, 64, 64), np.uint8)
    y = np.arange(2000) % 10
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_val=x[:100], y_val=y[:100])
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", 64, 3)
    size = len(pickle.dumps(BatchMaker(data, 32, 0, None)))
    assert size < 20_000 + 4 * 2100, size
    np.testing.assert_array_equal(data.batch(data.train, np.array([1999, 0])), x[[1999, 0]])


RSS_SCRIPT = textwrap.dedent("""
    import sys
    from gir.train.augment import default_augment
    from gir.train.data import load_dataset
    from gir.train.pipeline import BatchMaker, Loader
    spec, size = sys.argv[1], int(sys.argv[2])
    data = load_dataset(spec, size, 3)
    with Loader(BatchMaker(data, 16, 0, default_augment(size)), 1) as loader:
        batches = loader.train(1, 4)
        for _ in range(4):
            next(batches)
    status = open("/proc/self/status").read()  # VmHWM, unlike ru_maxrss, starts afresh at exec
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))  # KiB
""")


def peak_rss_kib(spec: str, size: int) -> int:
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, spec, str(size)], capture_output=True, text=True,
                         timeout=300, check=True)
    return int(out.stdout.split()[-1])


def write_jpegs(root, n: int) -> None:
    rng = np.random.default_rng(0)
    tile = Image.fromarray(rng.integers(0, 255, (90, 120, 3), np.uint8))
    for split, count in (("train", n), ("val", max(1, n // 10))):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
        for i in range(count):
            tile.save(root / split / f"c{i % 4}" / f"{i}.jpg", quality=80)


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """3,000 JPEGs (97 MB decoded) against 300, and an npz of 20,000 images (245 MB) against 2,000: the peak
    resident memory of the process feeding the steps stays within 25 MB."""
    write_jpegs(tmp_path / "small", 300)
    write_jpegs(tmp_path / "large", 3000)
    folder_small = peak_rss_kib(f"imagefolder:{tmp_path / 'small'}", 64)
    folder_large = peak_rss_kib(f"imagefolder:{tmp_path / 'large'}", 64)
    x = np.random.default_rng(1).integers(0, 255, (20000, 3, 64, 64), np.uint8)
    y = np.arange(20000) % 10
    np.savez(tmp_path / "small.npz", x_train=x[:2000], y_train=y[:2000], x_val=x[:200], y_val=y[:200])
    np.savez(tmp_path / "large.npz", x_train=x, y_train=y, x_val=x[:2000], y_val=y[:2000])
    del x
    npz_small = peak_rss_kib(f"npz:{tmp_path / 'small.npz'}", 64)
    npz_large = peak_rss_kib(f"npz:{tmp_path / 'large.npz'}", 64)
    assert folder_large - folder_small < 25_000, (folder_small, folder_large)
    assert npz_large - npz_small < 25_000, (npz_small, npz_large)


def test_bad_files_met_mid_run_are_one_line_each(tmp_path):
    """Through a worker process: a zero-byte image, a text file named .jpg, a truncated JPEG and a class folder
    deleted after the run started; files without an image suffix are not images and are not listed."""
    folder = tmp_path / "f"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (30, 20), (i * 40, 0, 0)).save(folder / split / c / f"{i}.jpg")
    (folder / "train" / "a" / "notes.txt").write_text("not an image, not listed")
    data = load_dataset(f"imagefolder:{folder}", 16, 3)
    assert len(data.train) == 8
    whole = (folder / "train" / "a" / "0.jpg").read_bytes()
    cases = [(b"", "cannot identify image file"), (b"just text", "cannot identify image file"),
             (whole[:len(whole) // 2], "Truncated File Read")]
    for content, why in cases:
        (folder / "train" / "a" / "0.jpg").write_bytes(content)
        with Loader(BatchMaker(data, 8, 0, None), 1) as loader:
            with pytest.raises(DataError, match=f"^{folder}/train/a/0.jpg: cannot read image: .*{why}"):
                list(loader.train(1, 2))
    (folder / "train" / "a" / "0.jpg").write_bytes(whole)
    for f in (folder / "train" / "b").iterdir():
        f.unlink()
    (folder / "train" / "b").rmdir()
    with Loader(BatchMaker(data, 8, 0, None), 1) as loader:
        with pytest.raises(DataError, match=f"^{folder}/train/b/\\d.jpg: cannot read image: .*No such file"):
            list(loader.train(1, 2))
