"""The catalogue of bad inputs (docs/errors.md): one test per row, each running the real CLI.

Every row checks the exit code, that stderr is exactly one `gir: error:` line (or argparse's usage
and error for exit 2), that the line names the key facts (file, flag, layer path, record), and
that no traceback is printed. Rows marked xfail(strict=True) assert the behaviour the catalogue
documents as correct where gir does not give it yet.

Most rows call `gir.cli.main` in-process; rows whose point is the process (a net file calling
sys.exit, SIGINT, --debug's traceback) run `python -m gir`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gir.cli import main
from gir.shapes.errors import ShapeError
from gir.train.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BAD = "tests/data/bad_nets"
DIGITS = "nets/digits_cnn.py"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


class Result:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out[-400:]!r}, err={self.err[-2000:]!r})"


def gir(capsys, *args) -> Result:
    """`gir ARGS` in this process: argparse's SystemExit becomes the exit code, and an exception that
    escapes main() is printed as Python would print it (a traceback, exit 1)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - shown as Python would show an escaped exception
        traceback.print_exc()
        rc = 1
    cap = capsys.readouterr()
    return Result(rc, cap.out, cap.err)


def gir_process(*args, timeout: float = 120) -> Result:
    r = subprocess.run([sys.executable, "-m", "gir", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, check=False)
    return Result(r.returncode, r.stdout, r.stderr)


def assert_one_line(r: Result, facts=(), absent=(), rc: int = 1) -> str:
    assert "Traceback" not in r.err + r.out, r
    assert r.rc == rc, r
    lines = r.err.splitlines()
    assert len(lines) == 1 and r.err.endswith("\n"), r
    line = lines[0]
    assert line.startswith("gir: error: "), r
    for f in facts:
        assert f in line, f"{f!r} not in {line!r}"
    for f in absent:
        assert f not in line, f"{f!r} in {line!r}"
    return line


def assert_usage(r: Result, facts=(), usage: str = "usage: gir") -> str:
    assert "Traceback" not in r.err + r.out, r
    assert r.rc == 2, r
    lines = r.err.splitlines()
    assert lines[0].startswith(usage), r
    line = lines[-1]
    assert line.startswith("gir: error: ") or line.startswith("gir ") and ": error: " in line, r
    for f in facts:
        assert f in line, f"{f!r} not in {line!r}"
    return line


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


# ---- files the rows use -------------------------------------------------------------------------

TINY = '''from gir.nn import N, Net, dense

net = Net("tiny", [dense(4, 2)], input_shape=(N, 4), num_classes=2)
'''

NAN = '''from gir.nn import N, Net, dense, layer


@layer("nanadd")
def nan_add(b, x):
    return b.add(x, b.broadcast_like(b.constant(float("nan")), x, ()))


net = Net("nan", [dense(4, 2), nan_add()], input_shape=(N, 4), num_classes=2)
'''

UNDECIDED = '''from gir.nn import N, H, W, Constraints, Init, Net, activate, conv_bn, dense, global_avg_pool, layer


@layer("down")
def pool_conv_down(b, x, c):
    with b.scope("pool"):
        p = b.max_pool(x, 2, 2)
    with b.scope("conv"):
        w = b.param("weight", (c, c, 3, 3), Init("he_normal", fan_in=c * 9))
        y = b.conv2d(x, w, stride=2, padding="same")
    return activate(b, b.add(p, y), "relu")


net = Net("undecided", [conv_bn(3, 16, name="stem"), pool_conv_down(16), global_avg_pool(), dense(16, 10)],
          input_shape=(N, 3, H, W), constraints=Constraints().at_least(H, 32).at_least(W, 32))
'''

HEAD_MISMATCH = '''from gir.nn import H, N, W, Net, conv_bn, dense, global_avg_pool
from gir.train import TrainConfig

net = Net("head7", [conv_bn(1, 8, k=3), global_avg_pool(), dense(8, 7)], input_shape=(N, 1, H, W),
          num_classes=10, sizes={"H": 16, "W": 16})
config = TrainConfig(image_size=16, epochs=1)
'''

ONE_CLASS = '''from gir.nn import H, N, W, Net, conv_bn, dense, global_avg_pool
from gir.train import TrainConfig

net = Net("one", [conv_bn(1, 8, k=3), global_avg_pool(), dense(8, 1)], input_shape=(N, 1, H, W),
          num_classes=1, sizes={"H": 16, "W": 16})
config = TrainConfig(image_size=16, epochs=1, batch_size=8, label_smoothing=0.1)
'''

FIVE_CLASSES = '''from gir.nn import H, N, W, Net, conv_bn, dense, global_avg_pool
from gir.train import TrainConfig

net = Net("five", [conv_bn(1, 8, k=3), global_avg_pool(), dense(8, 5)], input_shape=(N, 1, H, W),
          num_classes=5, sizes={"H": 16, "W": 16})
config = TrainConfig(image_size=16, epochs=1)
'''


def config_net(arg: str) -> str:
    return f'''from gir.nn import N, Net, dense
from gir.train import TrainConfig

net = Net("m", [dense(4, 2)], input_shape=(N, 4), num_classes=2)
config = TrainConfig({arg})
'''


def edited_digits() -> str:
    """nets/digits_cnn.py with conv3 narrowed to 48 channels: same net name, other parameter shapes."""
    text = (ROOT / DIGITS).read_text()
    edited = text.replace('conv_bn(32, 64, k=3, name="conv3")', 'conv_bn(32, 48, k=3, name="conv3")')
    edited = edited.replace("dense(64, 10", "dense(48, 10")
    assert edited.count("48") == 2
    return edited


def write(tmp: Path, name: str, text: str | bytes) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
    return p


def net(name: str, text: str) -> Callable:
    return lambda tmp, request: write(tmp, name, text)


# datasets ----------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
CIFAR = 1 + 3 * 32 * 32


def _cifar_records(labels) -> bytes:
    rec = np.zeros((len(labels), CIFAR), np.uint8)
    rec[:, 0] = labels
    return rec.tobytes()


def cifar_truncated(tmp, request):
    write(tmp, "cifar/data_batch_1.bin", _cifar_records([1, 2, 3])[:2 * CIFAR + 100])
    write(tmp, "cifar/test_batch.bin", _cifar_records([1, 2, 3]))


def cifar_empty(tmp, request):
    write(tmp, "cifar/data_batch_1.bin", b"")
    write(tmp, "cifar/test_batch.bin", _cifar_records([1, 2, 3]))


def cifar_label(tmp, request):
    write(tmp, "cifar/data_batch_1.bin", _cifar_records([1, 11, 3]))
    write(tmp, "cifar/test_batch.bin", _cifar_records([1, 2, 3]))


def _npz(tmp, name, **arrays):
    np.savez(tmp / name, **arrays)


def npz_label(tmp, request):
    x = RNG.integers(0, 255, (40, 16, 16), dtype=np.uint8)
    y = np.arange(40) % 10
    y[7] = 12
    _npz(tmp, "data.npz", x_train=x, y_train=y, x_val=x[:8], y_val=np.arange(8) % 10)


def npz_one_class(tmp, request):
    x = RNG.integers(0, 255, (40, 16, 16), dtype=np.uint8)
    _npz(tmp, "data.npz", x_train=x, y_train=np.zeros(40, np.int64), x_val=x[:8], y_val=np.zeros(8, np.int64))


def npz_five_classes(tmp, request):
    x = RNG.integers(0, 255, (40, 16, 16), dtype=np.uint8)
    _npz(tmp, "data.npz", x_train=x, y_train=np.arange(40) % 5, x_val=x[:8], y_val=np.arange(8) % 5)


def npz_empty(tmp, request):
    x = RNG.integers(0, 255, (8, 16, 16), dtype=np.uint8)
    _npz(tmp, "data.npz", x_train=x[:0], y_train=np.zeros(0, np.int64), x_val=x, y_val=np.arange(8) % 10)


def npz_missing_array(tmp, request):
    _npz(tmp, "data.npz", x_train=np.zeros((4, 16, 16), np.uint8), y_train=np.arange(4))


def npz_garbage(tmp, request):
    write(tmp, "data.npz", b"this is not a zip archive\n")


def mnist_truncated(tmp, request):
    def idx(name, arr, magic, cut=None):
        data = np.array([magic, *arr.shape], ">u4").tobytes() + arr.tobytes()
        write(tmp, f"mnist/{name}", data[:cut])
    images = RNG.integers(0, 255, (10, 28, 28), dtype=np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    idx("train-images-idx3-ubyte", images, 2051, cut=16 + 28 * 28 * 5 + 10)
    idx("train-labels-idx1-ubyte", labels, 2049)
    idx("t10k-images-idx3-ubyte", images, 2051)
    idx("t10k-labels-idx1-ubyte", labels, 2049)


def refbin_truncated(tmp, request):
    body = np.zeros((4, 1 + 3 * 8 * 8), np.uint8).tobytes()
    write(tmp, "refbin/train.bin", np.array([4], "<u4").tobytes() + body[:-50])
    write(tmp, "refbin/val.bin", np.array([4], "<u4").tobytes() + body)


def imagefolder(tmp, request, bad: bool = True):
    """Ten class folders (as many as the digits nets predict) of three 20x20 PNGs each."""
    from PIL import Image
    for split in ("train", "val"):
        for cls in "abcdefghij":
            for i in range(3):
                p = tmp / "folder" / split / cls / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(RNG.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p)
    if bad:
        write(tmp, "folder/train/b/1.png", b"\x89PNG but not really")


def imagefolder_zero_byte(tmp, request):
    imagefolder(tmp, request, bad=False)
    write(tmp, "folder/train/a/0.png", b"")


def imagefolder_empty(tmp, request):
    for split in ("train", "val"):
        (tmp / "folder" / split / "a").mkdir(parents=True)


# runs and checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One finished 1-epoch run of nets/digits_cnn.py (read only: rows copy it before changing it)."""
    run = tmp_path_factory.mktemp("digits_run") / "run"
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["train", DIGITS, "--epochs", "1", "-q", "--out", str(run)]) == 0
    finally:
        os.chdir(old)
    return run


def copy_run(tmp, request):
    shutil.copytree(request.getfixturevalue("digits_run"), tmp / "run")


def corrupt_checkpoint(tmp, request):
    good = request.getfixturevalue("digits_run") / "checkpoint.npz"
    write(tmp, "run/checkpoint.npz", good.read_bytes()[:100])


def _rewrite_checkpoint(tmp, request, **record) -> None:
    """The finished run, copied, with its checkpoint's record changed (arrays kept): e.g. back at step 20."""
    copy_run(tmp, request)
    arrays, meta = load_checkpoint(tmp / "run")
    save_checkpoint(tmp / "run", arrays, {k: v for k, v in {**meta, **record}.items() if k != "format"})


def flipped_checkpoint(tmp, request):
    """One byte flipped inside the stored arrays: the zip's CRC-32 of that member no longer matches."""
    copy_run(tmp, request)
    path = tmp / "run" / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def damaged_record(tmp, request):
    _rewrite_checkpoint(tmp, request, step=-3)


def damaged_trace(tmp, request):
    _rewrite_checkpoint(tmp, request, step=20)
    path = tmp / "run" / "trace.jsonl"
    lines = path.read_text().split("\n")
    lines[4] = lines[4][:30] + "\x00\x00" + lines[4][30:]
    path.write_text("\n".join(lines))


def foreign_npz_checkpoint(tmp, request):
    (tmp / "run").mkdir()
    np.savez(tmp / "run" / "checkpoint.npz", w=np.zeros(3))


class _Evil:
    """Unpickling this would run a command: a checkpoint must never be unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_checkpoint(tmp, request):
    (tmp / "run").mkdir()
    payload = np.empty(1, object)
    payload[0] = _Evil(str(tmp / "PWNED"))
    np.savez(tmp / "run" / "checkpoint.npz", __gir_checkpoint__=payload, w=payload)


def a_file(tmp, request):
    write(tmp, "afile", "not a folder\n")


def edited_net(tmp, request):
    request.getfixturevalue("digits_run")
    write(tmp, "digits_cnn.py", edited_digits())


def empty_dir(tmp, request):
    (tmp / "run").mkdir()


def both(*setups):
    def run(tmp, request):
        for s in setups:
            s(tmp, request)
    return run


def _jax_devices() -> int:
    import jax
    return len(jax.devices())


def _env(fresh_thread: bool = False, **values: str) -> Callable:
    """A row's setup: these environment variables set, and a compile cache of the test's own (so a module is
    compiled, not read from the user's cache); `fresh_thread`: this thread as if it had never called IREE's CPU
    device (the caller's priority is set, and its setting read, on a thread's first call, as in a fresh `gir`)."""
    def setup(tmp, request):
        mp = request.getfixturevalue("monkeypatch")
        if fresh_thread:
            from gir.lower import iree_runtime
            mp.setattr(iree_runtime, "_calling", threading.local())
        mp.setenv("GIR_CACHE_DIR", str(tmp / "cache"))
        for k, v in values.items():
            mp.setenv(k, v)
    return setup


def _no_rocm(tmp, request):
    from gir.lower.iree_runtime import DeviceUnavailable, device_config
    try:
        device_config("rocm")
    except DeviceUnavailable:
        return
    pytest.skip("this machine has a ROCm device")


# ---- usage errors (exit 2): argparse's usage line, then its error line ----------------------------

TRAIN = ["train", DIGITS, "-q"]

USAGE_ROWS = [
    pytest.param(["show", DIGITS, "--nope"], ["unrecognized arguments: --nope"], "usage: gir show",
                 id="unknown-flag-shows-the-command-usage"),
    pytest.param(["frob"], ["invalid choice: 'frob' (choose from 'show', 'lower'"], "usage: gir",
                 id="unknown-command"),
    pytest.param([], ["the following arguments are required: COMMAND"], "usage: gir", id="no-command"),
    pytest.param(["show"], ["the following arguments are required: net"], "usage: gir show", id="no-net-file"),
    pytest.param(["show", DIGITS, "--batch", "0"], ["argument --batch: --batch wants a positive integer, got 0"],
                 "usage: gir show", id="flag-batch-0"),
    pytest.param(["show", DIGITS, "--image", "x"], ["argument --image: --image wants a positive integer, got 'x'"],
                 "usage: gir show", id="flag-image-x"),
    pytest.param([*TRAIN, "--batch", "0"], ["argument --batch: --batch wants a positive integer, got 0"],
                 "usage: gir train", id="train-flag-batch-0"),
    pytest.param([*TRAIN, "--lr", "abc"], ["argument --lr: --lr wants a number, got 'abc'"], "usage: gir train",
                 id="flag-lr-abc"),
    pytest.param([*TRAIN, "--epochs", "two"], ["argument --epochs: --epochs wants an integer, got 'two'"],
                 "usage: gir train", id="flag-epochs-two"),
    pytest.param([*TRAIN, "--optimizer", "foo"],
                 ["argument --optimizer: invalid choice: 'foo' (choose from 'sgd', 'adam', 'adamw', 'rmsprop')"],
                 "usage: gir train", id="flag-optimizer-foo"),
    pytest.param([*TRAIN, "--devices", "0"], ["argument --devices: --devices wants a positive integer, got 0"],
                 "usage: gir train", id="flag-devices-0"),
    pytest.param([*TRAIN, "--backend", "torch"], ["argument --backend: invalid choice: 'torch'"], "usage: gir train",
                 id="flag-backend-torch"),
    pytest.param([*TRAIN, "--coordinator", "node0"],
                 ["argument --coordinator: --coordinator wants HOST:PORT (e.g. node0:29500), got 'node0'"],
                 "usage: gir train", id="flag-coordinator-without-port"),
    pytest.param([*TRAIN, "--coordinator", "node0:99999"],
                 ["argument --coordinator: --coordinator wants HOST:PORT (e.g. node0:29500), got 'node0:99999'"],
                 "usage: gir train", id="flag-coordinator-port-out-of-range"),
    pytest.param([*TRAIN, "--processes", "0"], ["argument --processes: --processes wants a positive integer, got 0"],
                 "usage: gir train", id="flag-processes-0"),
    pytest.param(["lower", DIGITS, "--target", "tpu"], ["argument --target: invalid choice: 'tpu'"],
                 "usage: gir lower", id="flag-target-tpu"),
    pytest.param(["lower", DIGITS, "-o", "x", "--iree-flag", "--bogus"], ["argument --iree-flag: expected one argument"],
                 "usage: gir lower", id="flag-iree-flag-without-equals"),
]


@pytest.mark.parametrize("args,facts,usage", USAGE_ROWS)
def test_usage_error(capsys, args, facts, usage):
    assert_usage(gir(capsys, *args), facts, usage)


# ---- errors (exit 1): exactly one `gir: error:` line -----------------------------------------------

def row(id: str, args: list, facts: list, *, setup: Callable | None = None, absent: list = (), problem: str = "",
        check: Callable | None = None):
    """`args` and `facts` may hold {tmp} (the test's tmp_path); `check(tmp, result)` runs after."""
    return pytest.param(args, facts, list(absent), setup, check, id=id, marks=[xfail(problem)] if problem else [])


def _no_vmfb(tmp, r):
    assert (tmp / "o" / "forward.mlir").exists() and (tmp / "o" / "forward.json").exists()
    assert not (tmp / "o" / "forward.vmfb").exists()


def _not_unpickled(tmp, r):
    assert not (tmp / "PWNED").exists(), "loading the checkpoint ran code"


def _nothing_done_before_the_net_check(tmp, r):
    assert r.out == "", f"data were loaded and modules compiled before the checkpoint's net was checked: {r.out!r}"


DATA = [*TRAIN, "--epochs", "1", "--out", "{tmp}/run", "--data"]
GPT_DATA = ["train", "nets/char_gpt.py", "-q", "--epochs", "1", "--out", "{tmp}/run", "--data"]


def _record_only(tmp: Path, net_file: str) -> None:
    """A checkpoint whose record names digits_cnn and `net_file`, with no arrays: what `gir sample` reads first."""
    (tmp / "run").mkdir()
    save_checkpoint(tmp / "run", {}, {"net": "digits_cnn", "net_file": net_file, "step": 1, "elapsed": 0.0,
                                      "steps_per_epoch": 1, "data": "digits", "seed": 0, "config": {}})


def image_run_record(tmp, request):
    _record_only(tmp, DIGITS)

ERROR_ROWS = [
    # flag values checked against the recipe (exit 1: the value parses but is not a valid recipe)
    row("flag-lr-0", [*TRAIN, "--lr", "0"], ["invalid training option: --lr must be > 0, got 0.0"]),
    row("flag-epochs-negative", [*TRAIN, "--epochs", "-3"], ["invalid training option: --epochs must be > 0, got -3"]),
    row("flag-label-smoothing-1.5", [*TRAIN, "--label-smoothing", "1.5"],
        ["invalid training option: --label-smoothing must be in [0, 1), got 1.5"]),
    row("flag-momentum-1", [*TRAIN, "--momentum", "1"], ["invalid training option: --momentum must be in [0, 1)"]),
    row("flag-passes-nope", ["lower", DIGITS, "-o", "{tmp}/o", "--no-compile", "--passes", "nope"],
        ["--passes: unknown pass 'nope'", "passes: ",
         "pipelines: default, default_avx2, default_jax, default_gpu, none"]),
    row("flag-devices-without-jax", [*TRAIN, "--devices", "2", "--out", "{tmp}/run"],
        ["--devices 2 needs --backend jax"]),
    row("flag-processes-without-jax", [*TRAIN, "--processes", "2", "--process-id", "0", "--coordinator",
                                       "localhost:29500", "--out", "{tmp}/run"],
        ["--processes needs --backend jax (several processes run on JAX)"]),
    row("flag-processes-without-coordinator", [*TRAIN, "--backend", "jax", "--processes", "2", "--process-id", "1",
                                               "--out", "{tmp}/run"],
        ["--processes needs --coordinator too (or --distributed, to read them from the launcher's environment)"]),
    row("flag-process-id-out-of-range", [*TRAIN, "--backend", "jax", "--processes", "2", "--process-id", "2",
                                         "--coordinator", "localhost:29500", "--out", "{tmp}/run"],
        ["--process-id 2 is out of range for --processes 2 (0 to 1)"]),
    row("lower-into-another-nets-folder", ["lower", DIGITS, "-o", "{tmp}/o", "--no-compile"],
        ["{tmp}/o holds the lowered modules of net 'mlp', not 'digits_cnn'; choose another folder with -o DIR"],
        setup=lambda tmp, request: write(tmp, "o/lowered.json", '{"net": "mlp"}\n')),
    row("flag-image-on-a-fixed-size-net", ["show", "nets/mnist_cnn.py", "--image", "32"], ["--image", "28"]),

    # the net file
    row("net-file-missing", ["show", "{tmp}/nope.py"], ["net file not found: {tmp}/nope.py"]),
    row("net-file-is-a-folder", ["show", "{tmp}"], ["{tmp} is a directory, not a net file"]),
    row("net-file-raises", ["show", f"{BAD}/import_error.py"],
        [f"{BAD}/import_error.py:4: RuntimeError while loading the net file: dataset path not configured"]),
    row("net-file-import-error", ["show", "{tmp}/needs_torch.py"],
        ["{tmp}/needs_torch.py:1: ModuleNotFoundError while loading the net file: No module named 'torchvision_nope'"],
        setup=net("needs_torch.py", "import torchvision_nope\n")),
    row("net-file-syntax-error", ["show", f"{BAD}/syntax_error.py"],
        [f"{BAD}/syntax_error.py:3: syntax error: '[' was never closed"]),
    row("net-file-not-python", ["show", "{tmp}/binary.py"], ["{tmp}/binary.py: ", "null bytes"], absent=[":None"],
        setup=net("binary.py", b"\x7fELF\x00\x00\x01")),
    row("net-file-without-net", ["show", f"{BAD}/no_net.py"],
        [f"{BAD}/no_net.py defines no `net`; a net file must set `net = Net(...)`"]),
    row("net-not-a-Net", ["show", "{tmp}/list.py"], ["{tmp}/list.py: `net` is a list, not a gir.nn.Net"],
        setup=net("list.py", "net = [1, 2]\n")),
    row("config-not-a-TrainConfig", ["train", "{tmp}/dict.py", "-q"],
        ["{tmp}/dict.py: `config` is a dict, not a gir.train.TrainConfig"],
        setup=net("dict.py", TINY + 'config = {"learning_rate": 0.1}\n')),
    row("layer-without-parentheses", ["show", "{tmp}/noparen.py"],
        ["{tmp}/noparen.py:2: ", "Net 'bad' layer 0 is <function relu", "did you forget the parentheses, as in relu()?"],
        setup=net("noparen.py", 'from gir.nn import Net, relu\nnet = Net("bad", [relu])\n')),
    row("layer-bad-argument", ["show", "{tmp}/badact.py"],
        [("{tmp}/badact.py: while building net 'bad': conv1 at {tmp}/badact.py:2: unknown activation 'relu7'; "
         "choose one of identity, relu")],
        setup=net("badact.py", 'from gir.nn import Net, conv_bn\nnet = Net("bad", [conv_bn(3, 8, act="relu7")])\n')),
    row("head-width-is-not-num-classes", ["train", "{tmp}/head7.py", "-q", "--out", "{tmp}/run"],
        ["num_classes", "10", "7"], setup=net("head7.py", HEAD_MISMATCH)),

    # shapes
    row("shape-conv-channels", ["show", f"{BAD}/channel_mismatch.py"],
        [(f"{BAD}/channel_mismatch.py:6: shape error in conv2d at layer 'conv2.conv': input has 32 channels but the "
         "weight expects 16")]),
    row("shape-dense-features", ["show", f"{BAD}/dense_mismatch.py"],
        [(f"{BAD}/dense_mismatch.py:7: shape error in dense at layer 'dense1': input has 64 features but the weight "
         "expects 128")]),
    row("shape-residual-add", ["show", f"{BAD}/residual_mismatch.py"],
        [(f"{BAD}/residual_mismatch.py:8: shape error in add at layer 'res1': operand shapes differ, dim 2: "
         "H != ceil(H/2)")]),
    row("shape-kernel-larger-than-input", ["show", f"{BAD}/kernel_too_large.py"],
        [(f"{BAD}/kernel_too_large.py:10: shape error in conv2d at layer 'conv6.conv': kernel 7 is larger than the "
         "spatial size ceil(H/32)"), "declare H >= 193"]),
    row("shape-needs-a-constraint", ["show", "{tmp}/undecided.py"],
        ["{tmp}/undecided.py:11: shape error in add at layer 'down1': ",
         "cannot decide whether floor(H/2) == ceil(H/2)", "declaring H divisible by 2 would decide it"],
        setup=net("undecided.py", UNDECIDED)),
    row("binding-below-range", ["show", DIGITS, "--image", "2"], ["H=2 is outside its declared range [4, ]"]),
    row("binding-not-divisible", ["lower", DIGITS, "-o", "{tmp}/o", "--no-compile", "--image", "18"],
        ["H=18 must be divisible by 4"]),

    # lowering and compiling for a target
    row("lower-nan-constant", ["lower", "{tmp}/nan.py", "-o", "{tmp}/o", "--no-compile"],
        ["NaN constants are not supported", "{tmp}/nan.py:6", "nanadd1"], setup=net("nan.py", NAN)),
    row("compile-rejected-for-target", ["lower", "{tmp}/tiny.py", "-o", "{tmp}/o", "--target", "cuda", "--chip", "sm_1"],
        ["iree-compile (cuda) failed: {tmp}/tiny.py:3: dot_general at layer 'dense1': missing GPU target"],
        setup=net("tiny.py", TINY), check=_no_vmfb),
    row("compile-bad-iree-flag", ["lower", "{tmp}/tiny.py", "-o", "{tmp}/o", "--iree-flag=--bogus"],
        ["iree-compile (cpu) failed: ", "Unknown command line argument '--bogus'"], setup=net("tiny.py", TINY),
        check=_no_vmfb),
    row("compile-unknown-chip", ["lower", "{tmp}/tiny.py", "-o", "{tmp}/o", "--target", "rocm", "--chip", "gfx_nope"],
        ["iree-compile (rocm) failed: ", "gfx_nope"], setup=net("tiny.py", TINY)),

    # config = TrainConfig(...) in the net file
    row("config-lr-0", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: ValueError while loading the net file: learning_rate must be > 0, got 0"],
        setup=net("cfg.py", config_net("learning_rate=0"))),
    row("config-batch-0", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: ValueError while loading the net file: batch_size must be > 0, got 0"],
        setup=net("cfg.py", config_net("batch_size=0"))),
    row("config-epochs-negative", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: ValueError while loading the net file: epochs must be > 0, got -3"],
        setup=net("cfg.py", config_net("epochs=-3"))),
    row("config-unknown-field", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: TypeError while loading the net file: ", "unexpected keyword argument 'lr'"],
        setup=net("cfg.py", config_net("lr=0.1"))),
    row("config-unknown-optimizer", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: ", "optimizer", "'adagrad'", "sgd"], absent=["Attribute(", "validator"],
        setup=net("cfg.py", config_net("optimizer='adagrad'"))),
    row("config-wrong-type", ["train", "{tmp}/cfg.py", "-q"],
        ["{tmp}/cfg.py:5: ", "batch_size", "32.0"], absent=["Attribute(", "validator"],
        setup=net("cfg.py", config_net("batch_size=32.0"))),

    # data
    row("data-unknown-source", [*DATA, "bogus"], ["unknown data source 'bogus'; expected one of: digits, "]),
    row("data-source-without-path", [*DATA, "mnist"], ["data source 'mnist' needs a path: mnist:PATH"]),
    row("data-folder-missing", [*DATA, "mnist:{tmp}/nope"], ["{tmp}/nope: no such directory"]),
    row("data-file-missing", [*DATA, "mnist:{tmp}"],
        ["{tmp}/train-images-idx3-ubyte: no such file (nor train-images-idx3-ubyte.gz)"]),
    row("data-npz-missing", [*DATA, "npz:{tmp}/nope.npz"], ["{tmp}/nope.npz: no such file"]),
    row("data-empty-npz-split", [*DATA, "npz:{tmp}/data.npz"],
        ["empty split: {tmp}/data.npz (x_train) has no images"], setup=npz_empty),
    row("data-empty-cifar-batch", [*DATA, "cifar10:{tmp}/cifar"],
        ["empty split: {tmp}/cifar/data_batch_1.bin has no images"], setup=cifar_empty),
    row("data-empty-imagefolder", [*DATA, "imagefolder:{tmp}/folder"],
        ["empty split: {tmp}/folder/train (jpg, jpeg, png files in class folders) has no images"],
        setup=imagefolder_empty),
    row("data-truncated-cifar", [*DATA, "cifar10:{tmp}/cifar"],
        [("{tmp}/cifar/data_batch_1.bin: length 6246 is not a multiple of 3073-byte records: record 2 is partial "
         "(100 bytes)")], setup=cifar_truncated),
    row("data-truncated-mnist", [*DATA, "mnist:{tmp}/mnist"],
        ["{tmp}/mnist/train-images-idx3-ubyte: truncated: header says 10 records, the file ends in record 5"],
        setup=mnist_truncated),
    row("data-truncated-ref-bin", [*DATA, "ref-bin:{tmp}/refbin"],
        ["{tmp}/refbin/train.bin: file length 726 does not match 4 records", "truncated in record 3 of 4"],
        setup=refbin_truncated),
    row("data-unreadable-image", [*DATA, "imagefolder:{tmp}/folder", "--batch", "2"],
        ["{tmp}/folder/train/b/1.png: cannot read image: "], setup=imagefolder),
    row("data-zero-byte-image", [*DATA, "imagefolder:{tmp}/folder", "--batch", "2", "--workers", "1"],
        ["{tmp}/folder/train/a/0.png: cannot read image: cannot identify image file"], setup=imagefolder_zero_byte),
    row("data-npz-missing-array", [*DATA, "npz:{tmp}/data.npz"],
        ["{tmp}/data.npz: missing array 'x_val' (has: x_train, y_train)"], setup=npz_missing_array),
    row("data-not-an-npz", [*DATA, "npz:{tmp}/data.npz"], ["{tmp}/data.npz: not a readable .npz file"],
        absent=["allow_pickle", "pickle"], setup=npz_garbage),
    row("data-label-out-of-range-npz", [*DATA, "npz:{tmp}/data.npz"],
        ["label 12 out of range [0, 10) at record 7 of {tmp}/data.npz (y_train)"], setup=npz_label),
    row("data-label-out-of-range-cifar", [*DATA, "cifar10:{tmp}/cifar"],
        ["label 11 out of range [0, 10) at record 1 of {tmp}/cifar/data_batch_1.bin"], setup=cifar_label),
    row("data-more-classes-than-the-net", ["train", "{tmp}/five.py", "-q", "--out", "{tmp}/run"],
        ["label 5 out of range [0, 5) at record 5 of digits"], setup=net("five.py", FIVE_CLASSES)),
    row("data-batch-larger-than-data", [*TRAIN, "--batch", "5000", "--out", "{tmp}/run"],
        ["batch 5000 is larger than the 1442 training images of digits"]),
    row("train-too-big-for-memory", [*TRAIN, "--image", "20000", "--batch", "512", "--out", "{tmp}/run"],
        ["--image 20000 with --batch 512: a train step of digits_cnn needs at least ",
         "GiB of activations", "more than this machine's", "lower --image or --batch"]),

    # text (sequence nets)
    row("text-not-utf8", [*GPT_DATA, "text:{tmp}/latin.txt"],
        ["{tmp}/latin.txt is not UTF-8 text (byte 3); read it as bytes with bytes:{tmp}/latin.txt"],
        setup=lambda tmp, request: write(tmp, "latin.txt", b"caf\xe9 au lait " * 40)),
    row("text-shorter-than-a-window", [*GPT_DATA, "text:{tmp}/short.txt"],
        ["{tmp}/short.txt: its train split (", "chars) is shorter than one window of 65; use a longer file or a "
         "shorter sequence"], setup=lambda tmp, request: write(tmp, "short.txt", "to be or not to be\n")),
    row("text-vocabulary-larger-than-the-net", [*GPT_DATA, "bytes:{tmp}/noise.bin"],
        ["{tmp}/noise.bin has 256 distinct bytes but the net embeds 65 tokens; use a net with a vocabulary of at "
         "least 256"], setup=lambda tmp, request: write(tmp, "noise.bin", bytes(range(256)) * 8)),
    row("text-data-for-an-image-net", [*DATA, "shakespeare"], ["--data shakespeare is text; digits_cnn reads images"]),
    row("image-data-for-a-text-net", [*GPT_DATA, "digits"],
        ["--data digits: char_gpt reads text (its input is token ids); use shakespeare, text:FILE or bytes:FILE"]),
    row("sample-an-image-run", ["sample", "{tmp}/run"],
        ["{tmp}/run/checkpoint.npz holds no vocabulary: it is not the run of a sequence net on text"],
        setup=image_run_record),
    row("sample-net-file-gone", ["sample", "{tmp}/run"],
        ["{tmp}/run was trained from {tmp}/gone.py, which is not there now; give the net file with --net FILE"],
        setup=lambda tmp, request: _record_only(tmp, "{tmp}/gone.py".format(tmp=tmp))),

    # output folders
    row("out-under-a-file", [*TRAIN, "--epochs", "1", "--out", "{tmp}/afile/run"],
        ["cannot create the run folder {tmp}/afile/run: Not a directory"], setup=a_file),
    row("out-in-proc", [*TRAIN, "--epochs", "1", "--out", "/proc/gir-run"],
        ["cannot create the run folder /proc/gir-run: "]),
    row("out-is-a-file", [*TRAIN, "--epochs", "1", "--out", "{tmp}/afile"], ["{tmp}/afile", "not a folder"],
        setup=a_file),
    row("lower-out-under-a-file", ["lower", "{tmp}/tiny.py", "-o", "{tmp}/afile/o", "--no-compile"],
        ["cannot create output folder {tmp}/afile/o: Not a directory"], setup=both(a_file, net("tiny.py", TINY))),
    row("lower-dump-into-missing-folder", ["lower", DIGITS, "--dump-dot", "{tmp}/no/such/g.dot"],
        ["cannot write {tmp}/no/such/g.dot: folder {tmp}/no/such does not exist"]),
    row("out-holds-a-run", [*TRAIN, "--out", "{tmp}/run"],
        [("{tmp}/run already holds a run (checkpoint.npz); continue it with --resume {tmp}/run or choose another "
         "--out")], setup=copy_run),

    # resume
    row("resume-with-recipe-flags", [*TRAIN, "--resume", "{tmp}", "--lr", "0.1", "--out", "{tmp}/x"],
        ["--resume continues the saved run with its own recipe, data and folder; drop --lr, --out"]),
    row("resume-not-a-folder", [*TRAIN, "--resume", "{tmp}/nope"], ["cannot resume: {tmp}/nope is not a folder"]),
    row("resume-without-checkpoint", [*TRAIN, "--resume", "{tmp}/run"],
        ["cannot resume: {tmp}/run has no checkpoint (checkpoint.npz)"], setup=empty_dir),
    row("resume-corrupt-checkpoint", [*TRAIN, "--resume", "{tmp}/run"],
        ["cannot read checkpoint {tmp}/run/checkpoint.npz: "], setup=corrupt_checkpoint),
    row("resume-flipped-checkpoint", [*TRAIN, "--resume", "{tmp}/run"],
        ["cannot read checkpoint {tmp}/run/checkpoint.npz: Bad CRC-32 for file "], setup=flipped_checkpoint),
    row("resume-damaged-record", [*TRAIN, "--resume", "{tmp}/run"],
        ["{tmp}/run/checkpoint.npz: the checkpoint's record is damaged: step is -3"], setup=damaged_record),
    row("resume-damaged-trace", [*TRAIN, "--resume", "{tmp}/run"],
        ["{tmp}/run/trace.jsonl line 5 is damaged: not JSON (", "remove the damaged lines (or the file) to go on"],
        setup=damaged_trace, check=_nothing_done_before_the_net_check),
    row("resume-not-a-gir-checkpoint", [*TRAIN, "--resume", "{tmp}/run"],
        ["{tmp}/run/checkpoint.npz is not a gir checkpoint (no __gir_checkpoint__ record)"],
        setup=foreign_npz_checkpoint),
    row("resume-pickled-checkpoint", [*TRAIN, "--resume", "{tmp}/run"],
        ["cannot read checkpoint {tmp}/run/checkpoint.npz: Object arrays cannot be loaded when allow_pickle=False"],
        setup=pickle_checkpoint, check=_not_unpickled),
    row("resume-another-net", ["train", "nets/mnist_cnn.py", "-q", "--resume", "{tmp}/run"],
        ["{tmp}/run/checkpoint.npz is a checkpoint of net 'digits_cnn', not 'mnist_cnn'"], setup=copy_run),
    row("resume-another-net-before-compiling", ["train", "nets/mnist_cnn.py", "-q", "--resume", "{tmp}/run"],
        ["is a checkpoint of net 'digits_cnn', not 'mnist_cnn'"], setup=copy_run,
        check=_nothing_done_before_the_net_check),
    row("resume-edited-net", ["train", "{tmp}/digits_cnn.py", "-q", "--resume", "{tmp}/run"],
        [("{tmp}/run/checkpoint.npz does not match this net and optimizer: wrong shape conv3.conv.weight "
         "[64, 32, 3, 3] float32 (want [48, 32, 3, 3] float32)")], setup=both(copy_run, edited_net)),

    # devices
    row("gpu-target-without-gpu", [*TRAIN, "--target", "rocm", "--out", "{tmp}/run"],
        ["no rocm device is available on this machine (IREE's 'hip' driver could not create one)",
         "gir lower --target rocm"], setup=_no_rocm),
    row("env-compile-jobs-two", ["bench", DIGITS, "--steps", "1", "--warmup", "0"],
        ["GIR_COMPILE_JOBS must be a whole number of compiles at once (1 or more), got 'two'"],
        setup=_env(GIR_COMPILE_JOBS="two")),
    row("env-caller-nice-ten", ["bench", DIGITS, "--steps", "1", "--warmup", "0"],
        ["GIR_IREE_CALLER_NICE must be a whole number from 0 (leave the calling thread's priority) to 19, got 'ten'"],
        setup=_env(GIR_IREE_CALLER_NICE="ten", fresh_thread=True)),
    row("devices-beyond-jax", [*TRAIN, "--backend", "jax", "--devices", "{devices}", "--out", "{tmp}/run"],
        ["--devices {devices}: JAX sees {seen} ", "XLA_FLAGS=--xla_force_host_platform_device_count={devices}"]),
]


@pytest.mark.parametrize("args,facts,absent,setup,check", ERROR_ROWS)
def test_error(capsys, tmp_path, request, args, facts, absent, setup, check):
    if setup is not None:
        setup(tmp_path, request)
    subs = {"tmp": str(tmp_path)}
    if any("{devices}" in a for a in args):
        seen = _jax_devices()
        subs.update(devices=str(seen + 1), seen=str(seen))
    r = gir(capsys, *(a.format(**subs) for a in args))
    assert_one_line(r, [f.format(**subs) for f in facts], [a.format(**subs) for a in absent])
    if check is not None:
        check(tmp_path, r)


# ---- warnings: the run goes on ----------------------------------------------------------------------

WARNING_ROWS = [
    row("warn-warmup-not-shorter-than-the-run", [*TRAIN, "--epochs", "1", "--warmup-epochs", "2",
                                                 "--out", "{tmp}/run"],
        ["--warmup-epochs 2 is not shorter than the 1-epoch run: the learning rate never reaches its peak 0.05"]),
    row("warn-one-class", ["train", "{tmp}/one.py", "-q", "--data", "npz:{tmp}/data.npz", "--out", "{tmp}/run"],
        ["the net has one class: its softmax cross-entropy is 0 for every input and nothing trains (label "
         "smoothing cannot change that)"], setup=both(net("one.py", ONE_CLASS), npz_one_class)),
    row("warn-more-outputs-than-classes", [*TRAIN, "--epochs", "1", "--batch", "8", "--data", "npz:{tmp}/data.npz",
                                           "--out", "{tmp}/run"],
        ["the net predicts 10 classes but npz:{tmp}/data.npz has 5: 5 outputs never see a label"],
        setup=npz_five_classes),
    row("warn-optimizer-field-unused", [*TRAIN, "--epochs", "1", "--optimizer", "adam", "--momentum", "0.5",
                                        "--out", "{tmp}/run"],
        ["momentum = 0.5 has no effect with the adam optimizer (only sgd read it)"]),
]


@pytest.mark.parametrize("args,facts,absent,setup,check", WARNING_ROWS)
def test_warning(capsys, tmp_path, request, args, facts, absent, setup, check):
    """One warning line at the start; the run finishes (exit 0) and says so."""
    if setup is not None:
        setup(tmp_path, request)
    subs = {"tmp": str(tmp_path)}
    r = gir(capsys, *(a.format(**subs) for a in args))
    assert "Traceback" not in r.err + r.out and r.rc == 0, r
    warnings = [line for line in r.err.splitlines() if line.startswith("gir: warning: ")]
    assert warnings == [f"gir: warning: {f.format(**subs)}" for f in facts], r.err
    assert "done: " in r.out


# ---- rows about the process ------------------------------------------------------------------------

def test_net_file_calls_sys_exit(tmp_path):
    write(tmp_path, "quits.py", "import sys\nsys.exit(3)\n")
    r = gir_process("show", tmp_path / "quits.py")
    assert_one_line(r, [f"{tmp_path}/quits.py:2: ", "SystemExit"])


def test_resume_a_finished_run(capsys, tmp_path, request):
    copy_run(tmp_path, request)
    before = json.loads((tmp_path / "run" / "metrics.json").read_text())
    r = gir(capsys, *TRAIN, "--resume", tmp_path / "run")
    assert "Traceback" not in r.err and r.rc in (0, 1), r
    assert "nan" not in (r.out + r.err).lower(), r
    assert "already" in r.out + r.err, r  # e.g. "RUN already finished (step 45 of 45); nothing to resume"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == before


def test_sigint_stops_with_a_checkpoint_and_exit_130(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gir", "train", DIGITS, "-q", "--out", str(run)], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not ((run / "trace.jsonl").exists() and (run / "trace.jsonl").read_text().count("\n") >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 120, "no training step within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gir: SIGINT: stopped after step "), err
    assert f"checkpoint {run}/checkpoint.npz; continue with --resume {run}" in lines[0]
    assert (run / "checkpoint.npz").exists()


def test_debug_shows_the_traceback(capsys):
    """Without --debug the error is one line (rows above); with it, the exception is raised with its traceback."""
    with pytest.raises(ShapeError, match="channel_mismatch.py:6: shape error in conv2d at layer 'conv2.conv'"):
        main(["show", f"{BAD}/channel_mismatch.py", "--debug"])
    r = gir_process("--debug", "show", f"{BAD}/channel_mismatch.py")
    assert r.rc == 1
    assert r.err.startswith("Traceback (most recent call last):"), r
    assert r.err.splitlines()[-1].startswith(
        f"gir.shapes.errors.ShapeError: {BAD}/channel_mismatch.py:6: shape error in conv2d at layer 'conv2.conv'")


def test_unwritable_out_is_found_before_compiling(capsys, tmp_path, monkeypatch):
    from gir.train import loop

    def compile_modules(*args, **kwargs):
        raise AssertionError("compiled the modules before checking --out")

    monkeypatch.setattr(loop, "compile_modules", compile_modules)
    a_file(tmp_path, None)
    r = gir(capsys, *TRAIN, "--epochs", "1", "--out", tmp_path / "afile" / "run")
    assert_one_line(r, [f"cannot create the run folder {tmp_path}/afile/run: Not a directory"])
