"""Text for sequence nets: a file's characters (or bytes) as token ids over a vocabulary built from the file, a
train/val split, and batches of windows of T+1 tokens (inputs are the first T, labels the last T).

`shakespeare` is the built-in corpus (gir/data/shakespeare.txt.gz, eight plays, about 1.1 MB; how it was made:
bench/make_corpus.py); `text:FILE` reads a UTF-8 file as characters and `bytes:FILE` any file as bytes. A file
ending in .gz is read through gzip.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import attrs
import numpy as np

from gir.train.augment import Part
from gir.train.data import DataError, split_spec

TEXT_SOURCES = ("shakespeare", "text", "bytes")
TEXT_USAGE = "shakespeare, text:FILE, bytes:FILE"
BUILTIN_CORPUS = Path(__file__).parent.parent / "data" / "shakespeare.txt.gz"
VAL_FRACTION = 0.1   # the file's last tenth is the validation split


def is_text_source(spec: str) -> bool:
    return spec.partition(":")[0] in TEXT_SOURCES


@attrs.frozen(eq=False)
class TokenSplit:
    """A split's token ids; its length is how many whole windows of `seq` tokens (plus the next) it holds."""

    tokens: np.ndarray
    seq: int

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq

    def windows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int32 inputs [k, T] and labels [k, T] (the inputs shifted by one) of the windows at `starts`."""
        idx = np.asarray(starts)[:, None] + np.arange(self.seq + 1)
        w = self.tokens[idx].astype(np.int32)
        return w[:, :-1], w[:, 1:]


@attrs.frozen(eq=False)
class TextData:
    """Train and val token splits of one source, and the vocabulary: `vocab[i]` is token i's text."""

    source: str
    train: TokenSplit
    val: TokenSplit
    vocab: tuple[str, ...]
    unit: str   # "char" or "byte"

    @property
    def classes(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, naming the first character the vocabulary lacks."""
        return encode(text, self.vocab, self.unit, self.source)

    def decode(self, ids: np.ndarray) -> str:
        return decode(ids, self.vocab, self.unit)

    def normalize(self, ids: np.ndarray) -> np.ndarray:
        """Token ids go to the net as they are (the counterpart of Dataset.normalize for images)."""
        return ids


def encode(text: str, vocab: tuple[str, ...], unit: str, source: str) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    pieces = [chr(b) for b in text.encode("utf-8")] if unit == "byte" else list(text)
    missing = next((p for p in pieces if p not in index), None)
    if missing is not None:
        raise DataError(f"{missing!r} is not in the vocabulary of {source} ({len(vocab)} "
                        f"{'bytes' if unit == 'byte' else 'characters'})")
    return np.array([index[p] for p in pieces], np.int32)


def decode(ids: np.ndarray, vocab: tuple[str, ...], unit: str) -> str:
    pieces = "".join(vocab[int(i)] for i in ids)
    return pieces.encode("latin-1").decode("utf-8", errors="replace") if unit == "byte" else pieces


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: {getattr(e, 'strerror', None) or e}") from None


def _pieces(raw: bytes, unit: str, path: Path) -> str:
    if unit == "byte":
        return raw.decode("latin-1")   # one character per byte, so the vocabulary and ids work the same
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); read it as bytes with bytes:{path}") from None


def load_text(spec: str, seq: int, vocab_size: int | None = None) -> TextData:
    """Open `spec` for windows of `seq` tokens; with `vocab_size` (the net's embedding rows), the file's
    vocabulary must fit in it."""
    kind, path = split_spec(spec, TEXT_SOURCES, "shakespeare", TEXT_USAGE, "text", "FILE")
    file = BUILTIN_CORPUS if kind == "shakespeare" else Path(path).expanduser()
    unit = "byte" if kind == "bytes" else "char"
    text = _pieces(_read(file), unit, file)
    vocab = tuple(sorted(set(text)))
    if vocab_size is not None and len(vocab) > vocab_size:
        raise DataError(f"{file} has {len(vocab)} distinct {unit}s but the net embeds {vocab_size} tokens; "
                        f"use a net with a vocabulary of at least {len(vocab)}")
    index = {c: i for i, c in enumerate(vocab)}
    tokens = np.fromiter((index[c] for c in text), np.uint16, len(text))
    cut = int(len(tokens) * (1 - VAL_FRACTION))
    train, val = TokenSplit(tokens[:cut], seq), TokenSplit(tokens[cut:], seq)
    for name, split in (("train", train), ("val", val)):
        if len(split) < 1:
            raise DataError(f"{file}: its {name} split ({len(split.tokens)} {unit}s) is shorter than one window of "
                            f"{seq + 1}; use a longer file or a shorter sequence")
    return TextData(spec, train, val, vocab, unit)


@attrs.frozen(eq=False)
class TokenBatchMaker:
    """Inputs and labels of a training step (windows at random places) or of a slice of the validation split
    (consecutive windows), the text counterpart of pipeline.BatchMaker."""

    data: TextData
    batch: int
    seed: int
    part: Part | None = None   # only these rows of each batch: one process's share in a multi-process run

    def train(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Step `step`'s windows (or the part's), starting anywhere in the train split, drawn with
        default_rng([seed, 2, step]) for the whole batch."""
        split = self.data.train
        starts = np.random.default_rng([self.seed, 2, step]).integers(0, len(split.tokens) - split.seq, self.batch)
        return split.windows(starts if self.part is None else starts[self.part.rows])

    def val(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation windows [start, start + batch) back to back (or the part's rows of them), padded to a whole
        batch by repeating the last; the labels are those of all the real windows."""
        split = self.data.val
        idx = np.arange(start, min(start + self.batch, len(split)))
        padded = np.concatenate([idx, np.full(self.batch - len(idx), idx[-1])])
        inputs, _ = split.windows((padded if self.part is None else padded[self.part.rows]) * split.seq)
        return inputs, split.windows(idx * split.seq)[1]
