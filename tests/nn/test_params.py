"""Parameters: initialized by scheme, counted, saved to and loaded from .npz by layer path."""
import numpy as np
import pytest

from gir.nn import Builder, H, N, W, conv_bn, dense, global_avg_pool, sequential
from gir.nn.params import ParamsError, init_params, load_params, param_count, save_params


def _graph(head=10):
    b = Builder("t")
    sequential(conv_bn(3, 8), global_avg_pool(), dense(8, head))(b, b.input("x", (N, 3, H, W)))
    return b.graph


def test_init_follows_schemes_and_is_seeded_per_name():
    g = _graph()
    p = init_params(g, seed=1)
    assert set(p) == {v.name for v in g.inputs if v.role in ("param", "state")}
    assert np.all(p["seq1.conv1.bn.gamma"] == 1) and np.all(p["seq1.conv1.bn.beta"] == 0)
    assert np.all(p["seq1.conv1.bn.running_var"] == 1) and np.all(p["seq1.conv1.bn.running_mean"] == 0)
    w = p["seq1.conv1.conv.weight"]
    assert w.dtype == np.float32 and w.shape == (8, 3, 3, 3)
    assert 0.5 < w.std() / np.sqrt(2 / 27) < 1.5  # He normal
    bound = 8 ** -0.5
    assert np.abs(p["seq1.dense1.weight"]).max() <= bound
    again = init_params(g, seed=1)
    assert all(np.array_equal(p[k], again[k]) for k in p)
    assert not np.array_equal(init_params(g, seed=2)["seq1.conv1.conv.weight"], w)
    # a different head leaves the other parameters' streams unchanged
    other = init_params(_graph(head=5), seed=1)
    assert np.array_equal(other["seq1.conv1.conv.weight"], w)


def test_param_count_counts_trainable_only():
    g = _graph()
    assert param_count(g) == 8 * 27 + 16 + 8 * 10 + 10
    assert param_count(g, "state") == 16


def test_npz_round_trip_and_atomic_write(tmp_path):
    g = _graph()
    p = init_params(g)
    path = tmp_path / "p.npz"
    save_params(path, p)
    q = load_params(path, g)
    assert set(q) == set(p) and all(np.array_equal(p[k], q[k]) for k in p)
    assert [f.name for f in tmp_path.iterdir()] == ["p.npz"]  # no temporary left behind


def test_load_rejects_mismatches_with_clear_messages(tmp_path):
    g = _graph()
    p = init_params(g)
    path = tmp_path / "p.npz"
    save_params(path, {k: v for k, v in p.items() if k != "seq1.dense1.bias"})
    with pytest.raises(ParamsError, match="missing seq1.dense1.bias"):
        load_params(path, g)
    save_params(path, dict(p, **{"seq1.dense1.bias": np.zeros(3, np.float32)}))
    with pytest.raises(ParamsError, match=r"seq1.dense1.bias has shape \[3\], the net expects \[10\]"):
        load_params(path, g)
    save_params(path, dict(p, extra=np.zeros(1, np.float32)))
    with pytest.raises(ParamsError, match="unexpected extra"):
        load_params(path, g)
    path.write_bytes(b"not a zip")
    with pytest.raises(ParamsError, match="not a readable"):
        load_params(path, g)
    with pytest.raises(ParamsError, match="no such"):
        load_params(tmp_path / "none.npz")


def test_a_flipped_byte_is_caught_by_the_zip_crc(tmp_path):
    g = _graph()
    path = tmp_path / "p.npz"
    save_params(path, init_params(g))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ParamsError, match=r"not a readable .npz parameter file \(Bad CRC-32 for file"):
        load_params(path, g)


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, bad=np.array([object()], dtype=object))
    with pytest.raises(ParamsError):
        load_params(path)
