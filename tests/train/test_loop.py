"""`gir train` end to end on the built-in digits data: accuracy, logs, exact resume after SIGKILL,
clean SIGINT, the non-finite guard, JAX on 4 devices against 1, IREE against JAX, clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gir.cli import main
from gir.train.backend import IreeBackend
from gir.train.checkpoint import load_checkpoint
from gir.train.loop import NonFiniteLoss, train
from gir.train.runlog import read_trace

ROOT = Path(__file__).resolve().parents[2]
NET = str(ROOT / "nets" / "digits_cnn.py")


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_trace(run / "trace.jsonl") if "loss" in r and not r.get("eval")}


def gir_train(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gir", "train", NET, "-q", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run / "trace.jsonl").exists() and max(losses(run), default=0) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


def test_small_cnn_reaches_97_percent_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", NET, "--out", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "digits (1442 train / 355 val images, 10 classes, 16x16)" in said and "done: 360 steps" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_top1"] >= 0.97 and metrics["steps"] == 360 and metrics["images_per_s"] > 0
    records = read_trace(out / "trace.jsonl")
    header, steps = records[0], [r for r in records[1:] if not r.get("eval")]
    assert header["header"] and header["config"]["learning_rate"] == 0.05 and header["data"] == "digits"
    assert [r["step"] for r in steps] == list(range(1, 361))
    assert set(steps[0]) >= {"step", "epoch", "loss", "lr", "time"} and steps[-1]["epoch"] == 8
    assert steps[-1]["loss"] < steps[0]["loss"] / 5
    evals = [r for r in records if r.get("eval")]
    assert [r["epoch"] for r in evals] == list(range(1, 9)) and evals[-1]["top1"] == metrics["val_top1"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays, meta = load_checkpoint(out)
    assert meta["step"] == 360 and meta["net"] == "digits_cnn" and "momentum:head.weight" in arrays


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_mid_epoch_then_resume_gives_the_same_losses(tmp_path, workers):
    """Checkpoint every epoch (45 steps); the run is killed in epoch 2 and resumed from step 45. The uninterrupted
    run makes its batches on a thread, the other on worker processes: the batches are the same."""
    args = ["--epochs", "3", "--augment", "--checkpoint-every", "1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", NET, "--out", str(full), "-q", "--workers", "0", *args]) == 0
    proc = gir_train("--out", str(cut), "--workers", workers, *args)
    wait_for_step(cut, 60, proc)
    children = children_of(proc.pid)
    assert len(children) >= int(workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while any(map(alive, children)) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, children)), "data workers outlived their killed parent"
    assert load_checkpoint(cut)[1]["step"] == 45 and max(losses(cut)) >= 60
    assert main(["train", NET, "--resume", str(cut), "-q", "--workers", workers]) == 0
    assert losses(cut) == losses(full)                     # every step, bit for bit (IREE on the CPU)
    assert load_checkpoint(cut)[1]["step"] == 135


def test_sigint_stops_cleanly_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = gir_train("--out", str(run), "--epochs", "2", "--workers", "2")
    wait_for_step(run, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = load_checkpoint(run)[1]["step"]
    assert f"SIGINT: stopped after step {step} of 90; checkpoint {run}/checkpoint.npz; continue with --resume {run}" \
        in err and "Traceback" not in err
    assert max(losses(run)) == step
    assert main(["train", NET, "--resume", str(run), "-q"]) == 0
    assert sorted(losses(run)) == list(range(1, 91))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = IreeBackend.step

    def poisoned(self, images, labels, lr, step):
        res = real(self, images, labels, lr, step)
        return type(res)(float("nan"), None) if step == 50 else res

    monkeypatch.setattr(IreeBackend, "step", poisoned)
    from gir.netfile import load_net_file
    from gir.train.loop import RunOptions
    net, cfg = load_net_file(NET)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 50 \(epoch 2\); stopped; the last good checkpoint "
                                            r".*checkpoint.npz \(step 45\) is kept"):
        train(net, cfg.replace(epochs=2), RunOptions(out=tmp_path, progress=False), log=lambda s: None)
    assert load_checkpoint(tmp_path)[1]["step"] == 45 and max(losses(tmp_path)) == 49


def test_jax_on_four_devices_matches_one_device(tmp_path):
    """Data-parallel over 4 forced CPU devices gives the same losses as one device within 1e-5 (relative):
    the same global batch, only the reductions' order differs."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    runs, said = {}, {}
    for n in (4, 1):
        proc = gir_train("--backend", "jax", "--devices", str(n), "--epochs", "1", "--out", str(tmp_path / f"d{n}"),
                         env=env)
        said[n], err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        runs[n] = losses(tmp_path / f"d{n}")
    assert "on jax x4 devices" in said[4] and "x4" not in said[1]
    assert sorted(runs[4]) == list(range(1, 46))
    np.testing.assert_allclose([runs[4][s] for s in sorted(runs[4])], [runs[1][s] for s in sorted(runs[1])],
                               rtol=1e-5)


def test_iree_and_jax_backends_agree(tmp_path):
    for backend in ("iree", "jax"):
        assert main(["train", NET, "--epochs", "1", "--backend", backend, "--out", str(tmp_path / backend), "-q"]) == 0
    a, b = losses(tmp_path / "iree"), losses(tmp_path / "jax")
    np.testing.assert_allclose([a[s] for s in range(1, 11)], [b[s] for s in range(1, 11)], rtol=1e-4)


@pytest.mark.parametrize("args,match", [
    (["--target", "rocm"], "no rocm device is available on this machine"),
    (["--lr", "-1"], "invalid training option: --lr must be > 0, got -1.0"),
    (["--epochs", "0"], "invalid training option: --epochs must be > 0, got 0"),
    (["--label-smoothing", "1.5"], "invalid training option: --label-smoothing must be in [0, 1), got 1.5"),
    (["--devices", "2"], "--devices 2 needs --backend jax"),
    (["--data", "mnist:/nonexistent"], "/nonexistent"),
    (["--data", "bogus:x"], "bogus"),
    (["--data", "shakespeare"], "--data shakespeare is text; digits_cnn reads images"),
    (["--backend", "jax", "--devices", "64"], "--devices 64: JAX sees"),
    (["--image", "20000", "--batch", "512"], "--image 20000 with --batch 512: a train step of digits_cnn needs at "
                                             "least"),
])
def test_bad_options_give_one_clear_line(tmp_path, capsys, args, match):
    assert main(["train", NET, "--out", str(tmp_path / "r"), "-q", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gir: error: ") and match in err and err.count("\n") == 1, err


def test_resume_errors(tmp_path, capsys):
    assert main(["train", NET, "--resume", str(tmp_path)]) == 1
    assert "has no checkpoint (checkpoint.npz)" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", NET, "--out", str(run), "--epochs", "1", "-q"]) == 0
    capsys.readouterr()
    assert main(["train", NET, "--out", str(run), "-q"]) == 1
    assert f"{run} already holds a run (checkpoint.npz); continue it with --resume {run}" in capsys.readouterr().err
    assert main(["train", NET, "--resume", str(run), "--lr", "0.1"]) == 1
    assert "--resume continues the saved run with its own recipe, data and folder; drop --lr" in capsys.readouterr().err
    other = str(ROOT / "nets" / "mnist_cnn.py")
    assert main(["train", other, "--resume", str(run), "-q"]) == 1
    assert "is a checkpoint of net 'digits_cnn', not 'mnist_cnn'" in capsys.readouterr().err


def test_an_unusable_run_folder_is_reported(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", NET, "--out", str(blocker / "run"), "-q"]) == 1
    assert f"gir: error: cannot create the run folder {blocker}/run: Not a directory" in capsys.readouterr().err


def test_batch_and_image_flags_size_the_compiled_step(tmp_path):
    out = tmp_path / "run"
    assert main(["train", NET, "--batch", "16", "--image", "12", "--epochs", "1", "--out", str(out), "-q"]) == 0
    header = read_trace(out / "trace.jsonl")[0]
    assert header["image_size"] == 12 and header["steps_per_epoch"] == 1442 // 16
    assert header["config"]["batch_size"] == 16 and max(losses(out)) == 1442 // 16


GPT = str(ROOT / "nets" / "char_gpt.py")


def test_text_run_stopped_by_sigint_resumes_exactly(tmp_path):
    """char_gpt on a small text at batch 4, T 16 (36 steps an epoch): stopped by SIGINT in epoch 1, resumed, it
    logs the losses of the uninterrupted run; the checkpoint keeps the vocabulary, evaluation reports bits/char."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: to be, or not to be, that is the question.\n" for i in range(50)))
    args = ["--data", f"text:{corpus}", "--batch", "4", "--seq", "16", "--epochs", "2", "-q"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", GPT, "--out", str(full), *args]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "gir", "train", GPT, "--out", str(cut), *args], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_step(cut, 10, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert main(["train", GPT, "--resume", str(cut), "-q"]) == 0
    assert losses(cut) == losses(full) and len(losses(full)) == 2 * 36
    arrays, meta = load_checkpoint(full)
    assert "".join(meta["vocab"]) == "".join(sorted(set(corpus.read_text()))) and meta["context"] == 16
    metrics = json.loads((full / "metrics.json").read_text())
    assert 0 < metrics["val_bits_per_char"] < np.log2(len(meta["vocab"])) and metrics["tokens_per_s"] > 0
    header = read_trace(full / "trace.jsonl")[0]
    assert header["train_tokens"] == int(len(corpus.read_text()) * 0.9) and header["val_tokens"] > 0


def test_a_sequence_net_refuses_image_data(tmp_path, capsys):
    assert main(["train", GPT, "--data", "digits", "--out", str(tmp_path / "r"), "-q"]) == 1
    assert "--data digits: char_gpt reads text (its input is token ids); use shakespeare, text:FILE or bytes:FILE" \
        in capsys.readouterr().err
