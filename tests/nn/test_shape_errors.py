"""Shape errors name the op, the layer path and the net file's line; `gir show` reports them cleanly."""
import os
import subprocess
import sys

import pytest

from gir.netfile import NetFileError, load_net_file
from gir.shapes.errors import ShapeError

BAD = os.path.join(os.path.dirname(__file__), "..", "data", "bad_nets")
CASES = {
    # file: (line, layer path, op, words the message must contain)
    "channel_mismatch.py": (6, "conv2.conv", "conv2d", ["32 channels", "expects 16"]),
    "residual_mismatch.py": (8, "res1", "add", ["H != ceil(H/2)", "[N,16,H,W]", "[N,16,ceil(H/2),ceil(W/2)]"]),
    "dense_mismatch.py": (7, "dense1", "dense", ["64 features", "expects 128"]),
    "kernel_too_large.py": (10, "conv6.conv", "conv2d", ["kernel 7", "ceil(H/32)", "H >= 193"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_error_names_layer_and_line(name):
    line, path, op, words = CASES[name]
    net, _ = load_net_file(os.path.join(BAD, name))
    with pytest.raises(ShapeError) as info:
        net.build()
    msg = str(info.value)
    assert f"{name}:{line}:" in msg
    assert f"at layer '{path}'" in msg
    assert f"shape error in {op}" in msg
    for w in words:
        assert w in msg, (w, msg)
    assert info.value.loc.line == line and info.value.loc.path == path


def _gir(*args):
    return subprocess.run([sys.executable, "-m", "gir", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gir_show_reports_shape_error_without_traceback(name):
    r = _gir("show", os.path.join(BAD, name))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    line, path, _, _ = CASES[name]
    assert r.stderr.startswith("gir: error: ") and f"{name}:{line}" in r.stderr and path in r.stderr
    assert r.stderr.count("\n") == 1  # one line


@pytest.mark.parametrize("name, words", [
    ("missing.py", ["net file not found"]),
    ("syntax_error.py", ["syntax_error.py:3", "syntax error"]),
    ("import_error.py", ["import_error.py:4", "RuntimeError", "dataset path not configured"]),
    ("no_net.py", ["defines no `net`"]),
])
def test_bad_net_files_get_their_own_message(name, words):
    path = os.path.join(BAD, name)
    with pytest.raises(NetFileError) as info:
        load_net_file(path)
    for w in words:
        assert w in str(info.value)
    r = _gir("show", path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr


def test_debug_flag_shows_traceback():
    r = _gir("--debug", "show", os.path.join(BAD, "channel_mismatch.py"))
    assert r.returncode != 0 and "Traceback" in r.stderr
