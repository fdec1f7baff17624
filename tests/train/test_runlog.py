"""trace.jsonl read back: a last line cut short by a crash is dropped, damage anywhere else is one clear error."""
from __future__ import annotations

import json

import pytest

from gir.train.runlog import Trace, TraceError, read_trace

RECORDS = [{"header": True, "net": "n"}, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]


def write(path, lines: list[str], end: str = "\n") -> None:
    path.write_text("\n".join(lines) + end)


def test_a_cut_short_last_line_is_dropped(tmp_path):
    path = tmp_path / "trace.jsonl"
    write(path, [json.dumps(r) for r in RECORDS])
    assert read_trace(path) == RECORDS
    write(path, [json.dumps(r) for r in RECORDS[:3]] + ['{"step": 3, "lo'], end="")
    assert read_trace(path) == RECORDS[:3]


@pytest.mark.parametrize("bad,why", [('{"step": 2, "lo', "not JSON"), ("[1, 2]", "not a JSON object"),
                                     ("\x00\x00\x00", "not JSON"), ("", "not JSON")])
def test_damage_before_the_last_line_is_named(tmp_path, bad, why):
    path = tmp_path / "trace.jsonl"
    write(path, [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), bad, json.dumps(RECORDS[3])])
    with pytest.raises(TraceError, match=rf"^{path} line 3 is damaged: {why}"):
        read_trace(path)


def test_resuming_keeps_the_records_up_to_the_checkpoint_and_refuses_a_damaged_trace(tmp_path):
    path = tmp_path / "trace.jsonl"
    write(path, [json.dumps(r) for r in RECORDS])
    trace = Trace(tmp_path, resume_step=2)
    trace.write({"step": 3, "loss": 0.9})
    trace.close()
    assert read_trace(path) == [*RECORDS[:3], {"step": 3, "loss": 0.9}]
    path.write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(TraceError, match=f"cannot read the trace {path}"):
        Trace(tmp_path, resume_step=2)
