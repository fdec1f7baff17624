"""Compiling StableHLO text with IREE for cpu, rocm, cuda or vulkan, cached by a hash of text, target and flags.

A failure is reported as a `CompileError` naming the op, its layer path and the user's source line."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

from gir.lower.compile_cache import CompileCache
from gir.lower.cpu_tuning import CONV_DIMS, NHWC_DIMS, tuning_flags

T = TypeVar("T")

TARGETS = ("cpu", "rocm", "cuda", "vulkan")
DEFAULT_CHIPS = {"rocm": "gfx1100", "cuda": "sm_80", "cpu": "host", "vulkan": "vp_android_baseline_2022"}
"""vulkan's default is a Vulkan profile, not a GPU: the baseline (no 64-bit or 16-bit types, small workgroups) that
every Vulkan 1.1 device meets, Mesa's CPU device lavapipe included; name a GPU (`rdna3`, `ampere`, `rx7900xtx`) for its
tuned code."""
DRIVERS = {"cpu": "local-task", "rocm": "hip", "cuda": "cuda", "vulkan": "vulkan"}

CPU_STACK_LIMIT = 128 * 1024
"""Bytes of stack one CPU dispatch may take (IREE's default is 32 KiB, a power of two is required). O3's fusion of
ConvNeXt-T's last residual add, bias, layer scale and head LayerNorm needs 73,856 bytes; under the default IREE
rejected the first flag set only late in the compile, doubling its time (docs/performance.md). The runtime gives
its workers CPU_WORKER_STACK (gir.lower.iree_runtime), four times this."""
CPU_WORKER_STACK = 4 * CPU_STACK_LIMIT
"""The stack of the CPU device's worker threads (IREE's default 128 KiB): a dispatch's own limit plus the task
system's frames. Running a gir CPU module outside gir needs `--task_worker_stack_size` at least this."""


class CompileError(Exception):
    """iree-compile rejected a module; the message maps its diagnostic back to gir's provenance."""


IM2COL, O3 = "--iree-global-opt-use-im2col-for-convs", "--iree-opt-level=O3"
NO_AGGRESSIVE_FUSION = "--iree-dispatch-creation-enable-aggressive-fusion=false"
CPU_SPEED_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    (IM2COL, O3), (IM2COL, O3, NO_AGGRESSIVE_FUSION), (IM2COL,), (O3,), ())
"""The CPU flag sets tried in order, the fastest first (side by side with $GIR_COMPILE_JOBS=2,
`parallel_attempts`): im2col and O3 make MobileNetV2's train step at
b8@64 1.56x faster (O3 alone 1.42x, im2col alone 1.47x; bench/levers.py, docs/performance.md). IREE
3.13 rejects some modules with both: O3's aggressive fusion puts a KxK convolution's padding into the
im2col matmul that feeds it ("write affecting operations on global resources", cifar_cnn, digits_cnn,
mnist_cnn, resnet34), so O3 is tried without it next; then each flag alone (small pooling and
batched-matvec shapes) and none. Losing im2col costs most where convolutions stay NCHW: every KxK one then runs
naively (mnist_cnn's 5x5 ones took 1.1 s each at batch 32). The default pipeline leaves only NHWC/HWIO ones
(nhwc_conv), which run fastest without it, so such modules are compiled without im2col (DIRECT_NHWC)."""


def target_flags(target: str, chip: str | None = None) -> list[str]:
    """iree-compile flags selecting the device: llvm-cpu on the host, HIP (gfx1100), CUDA (sm_80) or Vulkan (SPIR-V)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    chip = chip or DEFAULT_CHIPS[target]
    if target == "cpu":
        return ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                f"--iree-llvmcpu-target-cpu={chip}", f"--iree-llvmcpu-stack-allocation-limit={CPU_STACK_LIMIT}"]
    if target == "rocm":
        return ["--iree-hal-target-device=hip", f"--iree-rocm-target={chip}"]
    if target == "vulkan":
        return ["--iree-hal-target-device=vulkan", f"--iree-vulkan-target={chip}"]
    return ["--iree-hal-target-device=cuda", f"--iree-cuda-target={chip}"]


def cache_dir() -> Path:
    """Where compiled modules are kept: $GIR_CACHE_DIR, else ~/.cache/gir/iree."""
    return Path(os.environ.get("GIR_CACHE_DIR") or Path.home() / ".cache" / "gir" / "iree")


CHIP_TROUBLE = ("Unknown CPU", "does not provide any executable targets", "missing GPU target",
                "not a recognized processor", "unsupported target", "Unknown Vulkan target")
"""Diagnostics that mean the target chip name was not understood."""


def cache_key(text: str, flags: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(b"iree.compiler")
    h.update(_compiler_version().encode())
    for part in (text, *flags):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _compiler_version() -> str:
    try:
        from importlib.metadata import version
        return version("iree-base-compiler")
    except Exception:  # metadata missing in odd installs: still a usable key
        return "unknown"


_DIAG = re.compile(r'^(?P<where>\S+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|note): (?P<msg>.*)$', re.M)
_OP = re.compile(r'"stablehlo\.(\w+)"|stablehlo\.(\w+)')
_CRASHED_IN = re.compile(r"^In function: (\S+)$", re.M)
_LOC = re.compile(r'loc\("(?P<path>[^"]*)"\("(?P<file>[^"]*)":(?P<line>\d+):\d+\)\)')


def explain(diagnostics: str, text: str) -> str:
    """The first error as `file:line: OP at layer 'PATH': message`. The printer numbers the ops
    of each source line in the column, so file:line:col finds the one op in the module text."""
    for m in _DIAG.finditer(diagnostics):
        if m.group("sev") != "error":
            continue
        msg = m.group("msg").strip()
        where, line, col = m.group("where"), m.group("line"), m.group("col")
        lines = text.splitlines()
        if where == "<stdin>" and 0 < int(line) <= len(lines):
            src = lines[int(line) - 1]
        else:
            src = next((s for s in lines if f'"{where}":{line}:{col})' in s), "")
        op = _OP.search(src)
        loc = _LOC.search(src)
        if loc:
            name = (op.group(1) or op.group(2)) if op else "op"
            return f"{loc.group('file')}:{loc.group('line')}: {name} at layer '{loc.group('path')}': {msg}"
        return f"{where}:{line}: {msg}"
    _, _, diag = diagnostics.partition("Diagnostics:")
    lines = [s.strip() for s in diag.splitlines() if s.strip() and not s.startswith("Invoked with")]
    if not lines:
        return "iree-compile failed without a diagnostic"
    crashed = _CRASHED_IN.search(diag)   # an LLVM backend crash names only the dispatch it was compiling
    return f"{lines[0]} (iree-compile crashed compiling {crashed.group(1)})" if crashed else lines[0]


_CONV_DIMS = re.compile(CONV_DIMS)
DIRECT_NHWC = NHWC_DIMS
"""IREE's own NHWC/HWIO convolution runs near peak without im2col and 1.4-7x slower with it (docs/performance.md):
the flag is kept only for modules with convolutions in other layouts."""


KEEP_F64 = "--iree-input-demote-f64-to-f32=false"
"""IREE computes float64 in float32 unless told not to; a module with f64 values is compiled with this."""


def _attempts(text: str, target: str, chip: str | None, extra_flags: Sequence[str]) -> list[list[str]]:
    """The flag lists compile_text tries in turn; the first one names the cache entry."""
    flags = target_flags(target, chip) + ([KEEP_F64] if "f64>" in text else []) + list(extra_flags)
    if target != "cpu":
        return [flags]
    flags += tuning_flags(text, chip or DEFAULT_CHIPS[target], cache_dir() / "tuning")
    im2col_helps = any(dn != DIRECT_NHWC for dn in _CONV_DIMS.findall(text))
    speeds = dict.fromkeys(tuple(f for f in speed if im2col_helps or f != IM2COL) for speed in CPU_SPEED_FLAG_SETS)
    return [flags + list(speed) for speed in speeds]


def compile_text(text: str, target: str = "cpu", chip: str | None = None, extra_flags: Sequence[str] = (),
                 use_cache: bool = True) -> bytes:
    """The compiled .vmfb bytes for `text`, from the verified cache when the same text, target and flags
    were compiled before. On the CPU the speed flags are tried first, then fewer of them, then none."""
    attempts = _attempts(text, target, chip, extra_flags)

    def compile_now() -> bytes:
        accepted, result = fallback_in_turn(text, attempts, parallel_attempts())
        if accepted is not None:
            return result
        msg = explain(result, text)
        if chip and any(k in msg for k in CHIP_TROUBLE):
            msg += f" (is --chip {chip} a valid {target} {'CPU' if target == 'cpu' else 'GPU'} name?)"
        raise CompileError(f"iree-compile ({target}) failed: {msg}")

    if not use_cache:
        return compile_now()
    return CompileCache(cache_dir()).get_or_compile(cache_key(text, attempts[0]), compile_now)


def error_kind(diagnostics: str) -> str:
    """The first error's message without its numbers: two flag sets fail the same way when only a size or the
    dispatch differs ("exceeded stack allocation limit of 16 bytes ... Got 128 bytes" in one dispatch, "Got 64" in
    another)."""
    first = next((m.group("msg") for m in _DIAG.finditer(diagnostics) if m.group("sev") == "error"), None)
    return re.sub(r"\d+", "N", first if first is not None else explain(diagnostics, ""))


def fallback_in_turn(text: str, attempts: Sequence[Sequence[str]], width: int) -> tuple[int | None, bytes | str]:
    """`first_accepted`, but in turn (width 1), once the first set fails, the last set (no speed flags) is tried
    next: if it fails with the same kind of error, gir's speed flags are not the cause (a user's flag, an op IREE
    cannot compile) and no other set is tried (2 compiles instead of 5: cli.md's stack limit example 84 -> 57 s).
    Otherwise the sets between still come first in order, the last one's module kept for when they all fail."""
    if width > 1 or len(attempts) < 3:
        return first_accepted(text, attempts, width)
    accepted, first = first_accepted(text, attempts[:1], 1)
    if accepted is not None:
        return accepted, first
    bare, last = first_accepted(text, attempts[-1:], 1)
    if bare is None and error_kind(last) == error_kind(first):
        return None, last
    between, result = first_accepted(text, attempts[1:-1], 1)
    if between is not None:
        return between + 1, result
    return (None, last) if bare is None else (len(attempts) - 1, last)


def parallel_attempts() -> int:
    """How many flag sets compile at once: $GIR_COMPILE_JOBS, else 1 (in turn). Side by side (2), a set IREE rejects
    late costs no extra wait (ConvNeXt-T's b64@32 step: 46 s against 76-85 s in turn), but on a 2-core machine the
    spare slowed the set being awaited by up to 18% where that set compiles (EfficientNetV2-S 72-74 s in turn, 85-86 s
    side by side; bench/compile_attempts.py), and most modules' first set compiles."""
    value = os.environ.get("GIR_COMPILE_JOBS") or "1"
    if not value.isdigit() or int(value) < 1:
        raise CompileError(f"GIR_COMPILE_JOBS must be a whole number of compiles at once (1 or more), got {value!r}")
    return int(value)


def launch(source: Path, output: Path, errors: IO[bytes], args: Sequence[str], spare: bool = False) -> subprocess.Popen:
    """iree-compile on the module text in `source` (read as its stdin, so diagnostics name `<stdin>` lines as
    `explain` expects) with `args`, writing the .vmfb to `output` and diagnostics to `errors`. A `spare` compile (a
    later set, needed only if the ones before it fail) runs at the lowest CPU priority, so that it takes what the
    awaited one leaves idle."""
    # Imported here: running modules compiled elsewhere needs the runtime alone (bench/gpu_check.py on a machine
    # without IREE's compiler).
    from iree.compiler.tools.core import CompilerOptions, build_compile_command_line
    from iree.compiler.tools.debugging import TempFileSaver
    with TempFileSaver.implicit() as tfs:
        # Locations stay as written (no debug-info rewriting) so diagnostics point at our text.
        command = build_compile_command_line("-", tfs, CompilerOptions(output_file=str(output), extra_args=list(args)))
    nice = shutil.which("nice") if spare else None   # the nice tool, not a preexec_fn: forking a threaded process
    with source.open("rb") as stdin:                   # (JAX's) to run Python in the child can deadlock it
        return subprocess.Popen([nice, "-n", "19", *command] if nice else command, stdin=stdin,
                                stdout=subprocess.DEVNULL, stderr=errors)


STALL_S = 300.0
"""Seconds an awaited iree-compile may use no CPU before it is taken as deadlocked and started again, once: IREE 3.13
once sat 17 min in futex waits on ConvNeXt-T's train step (9 s of CPU used), where the same command compiles in
60-111 s. A compile beside busy processes still gets some CPU each second, even at the lowest priority."""
POLL_S = 5.0
"""How often a compile's CPU time is read while it is awaited."""


def cpu_seconds(pid: int) -> float | None:
    """A process's user and system CPU time so far, all its threads (/proc); None where that cannot be read."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_unless_stalled(proc: subprocess.Popen) -> int | None:
    """The compile's exit code, or None once it has used no CPU for STALL_S (it is then killed)."""
    used, since = cpu_seconds(proc.pid), time.monotonic()
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            now = cpu_seconds(proc.pid)
            if now is None or now != used:
                used, since = now, time.monotonic()
            elif time.monotonic() - since >= STALL_S:
                proc.kill()
                proc.wait()
                return None


def promote(proc: subprocess.Popen) -> None:
    """A spare compile back to the normal priority once it is the one awaited (the sets before it failed): at the
    lowest it waits behind every busy process (minutes beside two busy test workers). Linux keeps a niceness per
    thread, so each is raised; that needs privilege (root, or RLIMIT_NICE), without which the spare stays low."""
    tasks = Path(f"/proc/{proc.pid}/task")
    try:
        for tid in ([int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [proc.pid]):
            os.setpriority(os.PRIO_PROCESS, tid, 0)
    except (OSError, AttributeError):   # no privilege, the compile already gone, or no setpriority (not POSIX)
        pass


def first_accepted(text: str, attempts: Sequence[Sequence[str]], width: int) -> tuple[int | None, bytes | str]:
    """(its index, .vmfb) of the first flag set in order that iree-compile accepts, or (None, the last set's
    diagnostics). Up to `width` sets compile at once; a later set that finishes first waits for the earlier ones,
    and compiles still running once the answer is known (or on Ctrl-C) are killed. A compile that deadlocks
    (`wait_unless_stalled`) is started again once; twice, and its set counts as failed."""
    with tempfile.TemporaryDirectory(prefix="gir-iree-") as tmp:
        source = Path(tmp) / "module.mlir"
        source.write_text(text)
        running: dict[int, tuple[subprocess.Popen, Path, IO[bytes]]] = {}
        try:
            for i in range(len(attempts)):
                for j in range(i, min(i + width, len(attempts))):
                    if j not in running:
                        errors = (Path(tmp) / f"{j}.err").open("w+b")
                        output = Path(tmp) / f"{j}.vmfb"
                        running[j] = (launch(source, output, errors, attempts[j], spare=j > i), output, errors)
                proc, output, errors = running[i]
                if i > 0 and width > 1:
                    promote(proc)
                code = wait_unless_stalled(proc)   # still in `running` meanwhile, so Ctrl-C here kills it too
                if code is None:
                    errors.seek(0)
                    errors.truncate()
                    running[i] = (launch(source, output, errors, attempts[i]), output, errors)
                    code = wait_unless_stalled(running[i][0])
                del running[i]
                with errors:
                    errors.seek(0)
                    diagnostics = errors.read().decode(errors="replace")
                if code is None:
                    diagnostics = f"iree-compile used no CPU for {STALL_S:.0f} s, twice (deadlocked), and was killed"
                if code == 0:
                    return i, output.read_bytes()
            return None, f"Error code: {code}\nDiagnostics:\n{diagnostics}"
        finally:
            for proc, _, errors in running.values():
                proc.kill()
                proc.wait()
                errors.close()


def load_compiled(text: str, target: str, chip: str | None, extra_flags: Sequence[str],
                  load: Callable[[bytes], T]) -> T:
    """`load(compile_text(...))`; a cached module the runtime refuses (ValueError or RuntimeError from IREE) is
    evicted with a warning and compiled again, once."""
    try:
        return load(compile_text(text, target, chip, extra_flags))
    except (ValueError, RuntimeError) as e:
        name = cache_key(text, _attempts(text, target, chip, extra_flags)[0])
        CompileCache(cache_dir()).evict(name, f"was refused by the runtime ({e})")
        return load(compile_text(text, target, chip, extra_flags))
