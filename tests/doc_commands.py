"""Reading the shell sessions out of the Markdown docs and replaying them (tests/test_docs.py).

A fenced block with no language whose lines start with `$ ` is a session: each `$ ` line is a
command, the lines under it (up to the next `$ ` line) its documented output. HTML comments
`<!-- doc-test: ... -->` give what a reader does between the commands without being told:

    <!-- doc-test: file NAME -->           the next ```python block is saved as NAME
    <!-- doc-test: file NAME from DOC -->  save the block DOC (in docs/) saves as NAME
    <!-- doc-test: run COMMAND -->         a hidden shell step (it must succeed; its output is not shown)
    <!-- doc-test: slow -->                the next session's commands run only under `pytest --slow`
    <!-- doc-test: interrupt when TEXT --> the next session's first command gets a Ctrl-C (SIGINT) once
                                           it has printed TEXT, as its comment tells the reader to do

A documented output is compared line by line with what the command printed (stdout and stderr
together) after every number is replaced by `#` (timings, sizes and counts move; the words do
not); a `...` line stands for any number of lines. A command is expected to fail exactly when
its output shows `gir: error:` (or a stop by a signal) or a Python traceback, or when the next
command is `echo $?`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ANNOTATION = re.compile(r"^<!-- doc-test: (file|run|slow|interrupt when)\b\s*(.*?)\s*-->\s*$")
NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:[.,]\d+)*(?:e[+-]?\d+)?")
MARK = "\x1fDOC-TEST"
FAILURE = re.compile(r"^(gir(?: \w+)?: (?:error|SIGINT|SIGTERM|interrupted)\b|Traceback \(most recent call last\):)")


@dataclass
class Step:
    """One thing to do in a doc's working folder, in reading order."""
    kind: str                      # "cmd" (shown), "run" (hidden), "file" (save a block)
    text: str                      # the command, or the file's contents
    line: int                      # where it is in the doc (1-based)
    expected: list[str] = field(default_factory=list)
    name: str = ""                 # the file name of a "file" step
    slow: bool = False
    interrupt: str = ""            # send SIGINT once the command has printed this


def _blocks(lines: list[str]):
    """(annotations before it, info string, first line number, body lines) of every fenced block."""
    notes: list[tuple[str, str, int]] = []
    i = 0
    while i < len(lines):
        m = ANNOTATION.match(lines[i])
        if m:
            notes.append((m.group(1), m.group(2), i + 1))
        elif lines[i].startswith("```"):
            info, start = lines[i][3:].strip(), i + 1
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            yield notes, info, start, lines[start:j]
            notes, i = [], j
        i += 1
    if notes:
        yield notes, None, len(lines), []


def named_files(path: Path) -> dict[str, str]:
    """The blocks a doc saves as files, by file name."""
    return {s.name: s.text for s in parse(path, {}) if s.kind == "file" and s.text}


def parse(path: Path, others: dict[str, dict[str, str]] | None = None) -> list[Step]:
    """The steps of a doc; `others` maps doc names to their named files (for `file NAME from DOC`)."""
    steps: list[Step] = []
    for notes, info, start, body in _blocks(path.read_text().splitlines()):
        slow, save, interrupt = False, None, ""
        for kind, arg, line in notes:
            if kind == "interrupt when":
                interrupt = arg
            elif kind == "run":
                steps.append(Step("run", arg, line))
            elif kind == "slow":
                slow = True
            elif " from " in arg:
                name, doc = arg.split(" from ")
                text = (others or {}).get(doc, {}).get(name, "")
                steps.append(Step("file", text, line, name=name))
            else:
                save = (arg, line)
        if save is not None and info is not None:
            steps.append(Step("file", "\n".join(body) + "\n", save[1], name=save[0]))
        if info != "":
            continue
        for k, text in enumerate(body):
            if text.startswith("$ "):
                steps.append(Step("cmd", text[2:], start + k + 1, slow=slow, interrupt=interrupt))
                interrupt = ""
            elif steps and steps[-1].kind == "cmd" and steps[-1].line > start:
                steps[-1].expected.append(text)
    return steps


def expects_failure(steps: list[Step], i: int) -> bool:
    """Whether the documented command `steps[i]` fails (see the module docstring)."""
    nxt = next((s for s in steps[i + 1:] if s.kind == "cmd"), None)
    return any(FAILURE.match(x) for x in steps[i].expected) or (nxt is not None and nxt.text.strip() == "echo $?")


# Lines whose words depend on optional software on the reader's machine: (documented line, the tool,
# what gir prints instead where that tool is missing).
WITHOUT_TOOL = [(re.compile(r"^wrote (\S+)\.svg \(rendered by Graphviz dot\)$"), "dot",
                 r"render it with: dot -Tsvg \1.dot -o \1.svg (Graphviz's dot is not on PATH)")]


def _norm(line: str) -> str:
    line = line.rstrip()
    for documented, tool, instead in WITHOUT_TOOL:
        if documented.match(line) and shutil.which(tool) is None:
            line = documented.sub(instead, line)
    return NUMBER.sub("#", line)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` reads as `expected`, numbers aside, a `...` line standing for any lines."""
    exp, act = [_norm(x) for x in expected], [_norm(x) for x in actual]
    while act and not act[-1]:
        act.pop()

    def at(e: int, a: int) -> bool:
        if e == len(exp):
            return a == len(act)
        if exp[e].strip() == "...":
            return any(at(e + 1, k) for k in range(a, len(act) + 1))
        return a < len(act) and exp[e] == act[a] and at(e + 1, a + 1)
    return at(0, 0)


def replay(steps: list[Step], cwd: Path, env: dict[str, str], timeout: float) -> list[tuple[Step, int, str]]:
    """Runs the steps in one bash, in order, in `cwd`; (step, exit status, output) of each
    command and hidden step (files are written as they come, between commands)."""
    script = ["exec 2>&1"]
    for k, s in enumerate(steps):
        if s.kind == "file":
            script.append(f"cat > {s.name} <<'DOC_TEST_EOF'\n{s.text}DOC_TEST_EOF")
            continue
        script.append(_interrupted(s.text, s.interrupt) if s.interrupt else s.text + "\n__rc=$?")
        script.append(f"printf '\\n{MARK} %d {k}\\n' $__rc; (exit $__rc)")
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    out, results, pos = r.stdout, [], 0
    for m in re.finditer(rf"\n?{MARK} (\d+) (\d+)\n", out):
        results.append((steps[int(m.group(2))], int(m.group(1)), out[pos:m.start()]))
        pos = m.end()
    return results


def _interrupted(command: str, text: str) -> str:
    """Bash that runs `command` (its comment dropped) as its own job and sends it SIGINT once its
    output holds `text`, as a reader's Ctrl-C; sets __rc to its exit status and prints its output."""
    command = re.sub(r"\s+#.*$", "", command)
    return (f"set -m; __f=$(mktemp); {command} > \"$__f\" 2>&1 & __p=$!; set +m\n"
            f"until grep -qF -- {shlex.quote(text)} \"$__f\" || ! kill -0 $__p 2>/dev/null; do sleep 0.2; done\n"
            f"kill -INT $__p 2>/dev/null; wait $__p; __rc=$?; cat \"$__f\"; rm -f \"$__f\"")


def environment(bin_dir: str) -> dict[str, str]:
    """The reader's environment: the test's Python (and its `gir`) first on PATH, no colour, wide output."""
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def doc_files(root: Path) -> list[Path]:
    """The docs whose commands are replayed: the README and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def doc_steps(doc: Path, root: Path, slow: bool) -> list[Step]:
    """The steps of `doc`, files from other docs resolved; slow sessions only when `slow`."""
    others = {d.name: named_files(d) for d in doc_files(root)}
    return [s for s in parse(doc, others) if slow or not s.slow]


def prepare(root: Path, workdir: Path) -> None:
    """A reader's folder: what the docs call the repository root (nets/ and tests/data/)."""
    shutil.copytree(root / "nets", workdir / "nets")
    shutil.copytree(root / "tests" / "data", workdir / "tests" / "data")


def replay_doc(doc: Path, root: Path, workdir: Path, slow: bool, timeout: float):
    """(steps, results of `replay`) for `doc` run in a freshly prepared `workdir`."""
    prepare(root, workdir)
    steps = doc_steps(doc, root, slow)
    return steps, replay(steps, workdir, environment(str(Path(sys.executable).parent)), timeout)


def refresh(doc: Path, workdir: Path, root: Path, slow: bool = False, numbers: bool = False) -> list[str]:
    """Replays `doc` and writes each command's real output into it where it differs (with
    `numbers`, also where only numbers differ, which the replay test forgives) and the documented
    output has no `...` (elided outputs are left to a person); returns the commands it left.
    A maintainer's tool: `python3 tests/doc_commands.py [--slow] [--numbers] docs/cli.md`."""
    steps, results = replay_doc(doc, root, workdir, slow, 3600)
    lines, left = doc.read_text().split("\n"), []
    for step, rc, out in reversed(results):
        if step.kind != "cmd" or (step.expected == out.rstrip("\n").split("\n") if numbers and out.strip()
                                   else matches(step.expected, out.splitlines())):
            continue
        if any(x.strip() == "..." for x in step.expected):
            left.append(f"{doc.name}:{step.line}: {step.text}\n" + out)
            continue
        lines[step.line:step.line + len(step.expected)] = out.rstrip("\n").split("\n") if out.strip() else []
    doc.write_text("\n".join(lines))
    return left[::-1]


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    for name in (a for a in sys.argv[1:] if not a.startswith("--")):
        with tempfile.TemporaryDirectory() as tmp:
            for text in refresh(Path(name).resolve(), Path(tmp), here, slow="--slow" in sys.argv,
                                numbers="--numbers" in sys.argv):
                print("left as is (elided output):", text, sep="\n")
