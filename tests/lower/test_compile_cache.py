"""The compile cache trusts nothing it reads back: damaged, swapped and foreign entries are reported in one
warning line, removed and recompiled; the folder and key are private; concurrent writers leave one valid entry."""
from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gir.lower.compile_cache import KEY_FILE, CompileCache
from gir.lower.iree_compile import _attempts, cache_dir, cache_key, compile_text, load_compiled
from gir.lower.iree_runtime import IreeSession

ROOT = Path(__file__).resolve().parents[2]
MODULE = """module @tiny {
  func.func @double(%x: tensor<4xf32>) -> tensor<4xf32> {
    %y = stablehlo.add %x, %x : tensor<4xf32>
    return %y : tensor<4xf32>
  }
}
"""


class Counting:
    """A stand-in compiler: bytes that depend on the name, and a count of how often it ran."""

    def __init__(self, payload: bytes = b"module bytes " * 100):
        self.payload, self.calls = payload, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.payload


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def damage_swap(path: Path) -> None:
    """Another module's bytes, with that module's own (valid) tag left beside it under its own name."""
    other = path.with_name("other.vmfb")
    path.write_bytes(other.read_bytes())


@pytest.mark.parametrize("damage,why", [(damage_truncate, "fails its check (100 bytes)"),
                                        (damage_flip, "fails its check (1,300 bytes)"),
                                        (damage_empty, "is empty"),
                                        (damage_swap, "fails its check")])
def test_a_damaged_entry_is_reported_removed_and_recompiled(tmp_path, damage, why):
    said: list[str] = []
    cache = CompileCache(tmp_path, warn=said.append)
    compiler = Counting()
    assert cache.get_or_compile("entry", compiler) == compiler.payload
    cache.get_or_compile("other", Counting(b"another module" * 50))
    assert cache.get_or_compile("entry", compiler) == compiler.payload and compiler.calls == 1 and not said
    damage(cache.path("entry"))
    assert cache.get_or_compile("entry", compiler) == compiler.payload
    assert compiler.calls == 2
    assert len(said) == 1 and said[0].startswith(f"compile cache entry {cache.path('entry')} ")
    assert why in said[0] and said[0].endswith("; removed, recompiling")
    assert cache.get_or_compile("entry", compiler) == compiler.payload and compiler.calls == 2  # whole again


def test_an_untagged_entry_is_never_run_and_silently_replaced(tmp_path):
    """What an older gir left (no tag) is not trusted: compiled again, without a warning for each old entry."""
    said: list[str] = []
    cache = CompileCache(tmp_path, warn=said.append)
    compiler = Counting()
    cache.get_or_compile("entry", compiler)
    cache.path("entry").with_suffix(".vmfb.tag").unlink()
    cache.path("entry").write_bytes(b"whatever an older version wrote")
    assert cache.get_or_compile("entry", compiler) == compiler.payload and compiler.calls == 2 and not said


def test_an_unreadable_entry_is_replaced(tmp_path, monkeypatch):
    said: list[str] = []
    cache = CompileCache(tmp_path, warn=said.append)
    compiler = Counting()
    cache.get_or_compile("entry", compiler)
    real = Path.read_bytes

    def refuse(self):
        if self == cache.path("entry"):
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert cache.get_or_compile("entry", compiler) == compiler.payload and compiler.calls == 2
    assert said == [f"compile cache entry {cache.path('entry')} unreadable (Permission denied); removed, "
                    f"recompiling"]


def test_a_module_gir_did_not_write_is_not_run(tmp_path):
    """An entry and a tag made with another key (someone else's cache, or a forged pair) do not verify."""
    said: list[str] = []
    cache = CompileCache(tmp_path, warn=said.append)
    cache.get_or_compile("warm", Counting())  # makes the folder and its key
    forged = b"\x7fELF native code from elsewhere"
    cache.path("entry").write_bytes(forged)
    tag = hmac.new(b"k" * 32, b"entry\0" + forged, hashlib.sha256).hexdigest()
    cache.path("entry").with_suffix(".vmfb.tag").write_text(tag)
    compiler = Counting()
    assert cache.get_or_compile("entry", compiler) == compiler.payload and compiler.calls == 1
    assert len(said) == 1 and "fails its check" in said[0]


def test_the_folder_and_key_are_private(tmp_path):
    root = tmp_path / "cache"
    CompileCache(root).get_or_compile("entry", Counting())
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / KEY_FILE).stat().st_mode) == 0o600
    assert len((root / KEY_FILE).read_bytes()) == 32
    root.chmod(0o777)  # loosened by hand: tightened on the next use
    CompileCache(root).get_or_compile("entry", Counting())
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def _compile_slowly(root: str, log: str) -> bytes:
    def slow() -> bytes:
        with open(log, "a") as f:
            f.write("compiled\n")
        time.sleep(1.0)
        return b"the one module" * 100
    return CompileCache(Path(root)).get_or_compile("shared", slow)


def test_concurrent_writers_compile_once_and_leave_one_valid_entry(tmp_path):
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_compile_slowly, [(str(tmp_path / "c"), str(log))] * 3)
    assert results == [b"the one module" * 100] * 3
    assert log.read_text() == "compiled\n"   # the others waited on the entry's lock, then read it
    said: list[str] = []
    again = Counting()
    assert CompileCache(tmp_path / "c", warn=said.append).get_or_compile("shared", again) == results[0]
    assert again.calls == 0 and not said


def test_two_gir_lower_processes_at_once(tmp_path):
    env = {**os.environ, "GIR_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "gir", "lower", "nets/digits_cnn.py", "-o", str(tmp_path / d)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "warning" not in err
    entries = sorted((tmp_path / "cache").glob("*.vmfb"))
    assert len(entries) == 3   # forward, eval and train step, one entry each
    for a in ("forward", "eval", "train_step"):
        assert (tmp_path / "a" / f"{a}.vmfb").read_bytes() == (tmp_path / "b" / f"{a}.vmfb").read_bytes()
    said: list[str] = []
    cache = CompileCache(tmp_path / "cache", warn=said.append)
    for e in entries:
        cache.get_or_compile(e.stem, Counting())
    assert not said


def test_a_module_the_runtime_refuses_is_evicted_and_recompiled(tmp_path, monkeypatch, capsys):
    """A correctly tagged entry the runtime cannot load (as from another IREE build) is compiled again."""
    monkeypatch.setenv("GIR_CACHE_DIR", str(tmp_path))
    good = compile_text(MODULE, "cpu")
    name = cache_key(MODULE, _attempts(MODULE, "cpu", None, ())[0])
    cache = CompileCache(cache_dir())
    key = (cache_dir() / KEY_FILE).read_bytes()
    junk = b"not a flatbuffer at all" * 10
    cache.path(name).write_bytes(junk)
    cache.path(name).with_suffix(".vmfb.tag").write_text(hmac.new(key, name.encode() + b"\0" + junk,
                                                                  hashlib.sha256).hexdigest())
    session = load_compiled(MODULE, "cpu", None, (), IreeSession)
    assert session.module is not None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"compile cache entry {cache.path(name)} was refused by the runtime" in err
    assert cache.path(name).read_bytes() == good


def test_gir_train_goes_on_past_a_bit_flipped_module(tmp_path):
    """The case that used to end in SIGILL with no message: one warning line, a recompile, a finished run."""
    env = {**os.environ, "GIR_CACHE_DIR": str(tmp_path / "cache")}

    def train(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gir", "train", "nets/digits_cnn.py", "--epochs", "1", "-q",
                               "--out", str(tmp_path / out)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)

    first = train("a")
    assert first.returncode == 0, first.stderr
    (entry,) = (tmp_path / "cache").glob("*.vmfb")
    damage_flip(entry)
    second = train("b")
    assert second.returncode == 0, second.stderr
    warnings = [line for line in second.stderr.splitlines() if line.startswith("gir: warning:")]
    assert warnings == [f"gir: warning: compile cache entry {entry} fails its check "
                        f"({entry.stat().st_size:,} bytes); removed, recompiling"]
    assert (tmp_path / "b" / "metrics.json").exists()
