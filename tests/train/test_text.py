"""Text data: the built-in corpus, text:/bytes: files, windows and their batches, and the errors."""
import gzip

import numpy as np
import pytest

from gir.train.data import DataError
from gir.train.pipeline import Loader
from gir.train.text import TokenBatchMaker, load_text


def test_builtin_corpus_fits_the_nano_vocabulary_and_splits_90_10():
    d = load_text("shakespeare", 64, 65)
    assert d.unit == "char" and d.classes <= 65 and "\n" in d.vocab and "Z" in d.vocab
    n = len(d.train.tokens) + len(d.val.tokens)
    assert abs(len(d.val.tokens) / n - 0.1) < 1e-3
    assert d.decode(d.train.tokens[:25]) == "THE TRAGEDY OF CORIOLANUS"
    assert d.train.tokens.max() < d.classes


def test_windows_are_inputs_and_next_token_labels(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij" * 20)
    d = load_text(f"text:{f}", 4)
    assert d.vocab == tuple("abcdefghij")
    x, y = d.train.windows(np.array([0, 3]))
    assert x.dtype == np.int32 and x.shape == y.shape == (2, 4)
    assert d.decode(x[1]) == "defg" and d.decode(y[1]) == "efgh"


def test_train_batches_are_a_function_of_seed_and_step(tmp_path):
    d = load_text("shakespeare", 16)
    a, b = TokenBatchMaker(d, 8, 3), TokenBatchMaker(d, 8, 3)
    assert all(np.array_equal(u, v) for u, v in zip(a.train(5), b.train(5)))
    assert not np.array_equal(a.train(5)[0], a.train(6)[0])
    assert not np.array_equal(a.train(5)[0], TokenBatchMaker(d, 8, 4).train(5)[0])
    x, y = a.train(1)
    assert np.array_equal(x[:, 1:], y[:, :-1])


def test_val_covers_every_window_once_in_padded_batches():
    d = load_text("shakespeare", 64)
    maker = TokenBatchMaker(d, 32, 0)
    with Loader(maker, 0) as loader:
        batches = list(loader.val())
    assert all(x.shape == (32, 64) for x, _, _ in batches)
    labels = np.concatenate([y for _, y, _ in batches])
    assert len(labels) == len(d.val)
    whole = d.val.tokens[1:len(d.val) * 64 + 1].astype(np.int32)
    assert np.array_equal(labels.reshape(-1), whole)


def test_bytes_source_reads_any_file_and_decodes_utf8(tmp_path):
    f = tmp_path / "b.bin"
    f.write_bytes("héllo wörld ".encode() * 10)
    d = load_text(f"bytes:{f}", 8)
    assert d.unit == "byte" and d.classes == len(set(f.read_bytes()))
    assert d.decode(d.encode("héllo")) == "héllo"


def test_gzipped_file_reads_like_the_plain_one(tmp_path):
    plain, packed = tmp_path / "a.txt", tmp_path / "a.txt.gz"
    plain.write_text("to be or not to be " * 30)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert np.array_equal(load_text(f"text:{plain}", 8).train.tokens, load_text(f"text:{packed}", 8).train.tokens)


@pytest.mark.parametrize("spec, message", [
    ("poems:x", "unknown text source 'poems:x'"),
    ("shakespeare:x", "takes no path"),
    ("text:", "needs a path: text:FILE"),
    ("text:/no/such/file.txt", "/no/such/file.txt"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(DataError, match=message):
        load_text(spec, 8)


def test_file_errors_name_the_file(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9 " * 50)
    with pytest.raises(DataError, match=r"latin.txt is not UTF-8 text \(byte 3\); read it as bytes with bytes:"):
        load_text(f"text:{latin}", 8)
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    with pytest.raises(DataError, match="shorter than one window of 9"):
        load_text(f"text:{short}", 8)
    with pytest.raises(DataError, match="has 63 distinct chars but the net embeds 10 tokens"):
        load_text("shakespeare", 8, 10)
    bad_gz = tmp_path / "bad.txt.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.txt.gz"):
        load_text(f"text:{bad_gz}", 8)


def test_encode_names_a_missing_character():
    d = load_text("shakespeare", 8)
    with pytest.raises(DataError, match="'@' is not in the vocabulary of shakespeare"):
        d.encode("hi @ there")


def test_process_parts_of_a_batch_are_its_rows():
    """In a multi-process run each process makes its rows of every batch; together they are the whole batch."""
    from gir.train.augment import Part
    d = load_text("shakespeare", 16)
    whole = TokenBatchMaker(d, 8, 5)
    parts = [TokenBatchMaker(d, 8, 5, Part(a, a + 4, 8)) for a in (0, 4)]
    for step in (1, 9):
        x, y = whole.train(step)
        assert np.array_equal(np.concatenate([p.train(step)[0] for p in parts]), x)
        assert np.array_equal(np.concatenate([p.train(step)[1] for p in parts]), y)
    start = len(d.val) - 3   # a last, padded val batch
    x, y = whole.val(start)
    got = [p.val(start) for p in parts]
    assert np.array_equal(np.concatenate([g[0] for g in got]), x) and all(np.array_equal(g[1], y) for g in got)
