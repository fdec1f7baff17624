"""Checkpoints: round trip, atomic replacement (a failed write keeps the previous checkpoint and
leaves no temporary file), no code on load, and clear errors for missing, corrupt or foreign ones."""
from __future__ import annotations

import numpy as np
import pytest

from gir.train import checkpoint as ck
from gir.train.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint


def _arrays(v: float = 1.0):
    return {"conv.weight": np.full((2, 3), v, np.float32), "momentum:conv.weight": np.zeros((2, 3), np.float32),
            "bn.running_var": np.ones(4, np.float32)}


def _meta(step: int, **changes):
    """A whole record, as a run writes it."""
    return {"net": "n", "step": step, "elapsed": 1.5, "steps_per_epoch": 10, "data": "digits", "seed": 0,
            "config": {"learning_rate": 0.1}, **changes}


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path, _arrays(), _meta(7))
    arrays, meta = load_checkpoint(tmp_path)
    assert meta == {"format": ck.FORMAT, **_meta(7)}
    for k, v in _arrays().items():
        np.testing.assert_array_equal(arrays[k], v)
        assert arrays[k].dtype == v.dtype
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _arrays(1.0), _meta(1))

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.np, "savez", disk_full)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*checkpoint.npz: No space left on device; "
                                              r"the previous checkpoint \(if any\) is kept"):
        save_checkpoint(tmp_path, _arrays(2.0), _meta(2))
    monkeypatch.undo()
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 1 and arrays["conv.weight"][0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]   # no temporary left behind


def test_an_interrupt_during_the_write_leaves_no_partial_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _arrays(1.0), _meta(1))
    monkeypatch.setattr(ck.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _arrays(2.0), _meta(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)[1]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_loading_never_unpickles(tmp_path):
    """An object array would need pickle; the loader refuses instead of running code."""
    np.savez(tmp_path / "checkpoint.npz", **{ck.META_KEY: np.array('{"format": 1}'),
                                             "evil": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*Object arrays cannot be loaded"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("case,match", [
    ("no_folder", r"cannot resume: .* is not a folder"),
    ("no_checkpoint", r"has no checkpoint \(checkpoint.npz\); was the run stopped before its first checkpoint"),
    ("corrupt", r"cannot read checkpoint .*checkpoint.npz"),
    ("not_gir", r"is not a gir checkpoint"),
])
def test_clear_errors(tmp_path, case, match):
    folder = tmp_path / "run"
    if case != "no_folder":
        folder.mkdir()
    if case == "corrupt":
        (folder / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    if case == "not_gir":
        np.savez(folder / "checkpoint.npz", x=np.zeros(2))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(folder)


def test_a_flipped_byte_in_an_array_fails_the_zip_crc(tmp_path):
    """The .npz's members carry CRC-32s that numpy's reader checks: damage inside an array is one clear error."""
    save_checkpoint(tmp_path, {"w": np.arange(4096, dtype=np.float32)}, _meta(3))
    path = tmp_path / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    at = data.index(np.arange(4096, dtype=np.float32)[2000:2004].tobytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*checkpoint.npz: Bad CRC-32 for file 'w.npy'"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("field,value", [("step", -1), ("step", "7"), ("elapsed", None), ("steps_per_epoch", 0),
                                         ("net", ""), ("config", [1]), ("seed", True)])
def test_a_damaged_record_is_named(tmp_path, field, value):
    save_checkpoint(tmp_path, _arrays(), {**_meta(3), field: value})
    with pytest.raises(CheckpointError, match=rf"checkpoint.npz: the checkpoint's record is damaged: {field} is "):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _arrays(), {k: v for k, v in _meta(3).items() if k != field})
    with pytest.raises(CheckpointError, match=rf"record is damaged: {field} is None"):
        load_checkpoint(tmp_path)


def test_compatibility_names_what_differs():
    want = {k: (v.shape, str(v.dtype)) for k, v in _arrays().items()}
    check_compatible(_arrays(), want, "ckpt")
    other = {**_arrays(), "extra": np.zeros(1)}
    del other["bn.running_var"]
    other["conv.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"ckpt does not match this net and optimizer: missing bn.running_var; "
                                              r"unexpected extra; wrong shape conv.weight \[3, 3\] float32"):
        check_compatible(other, want, "ckpt")
