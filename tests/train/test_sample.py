"""Sampling: the next-token rule, the generation window, and `gir sample` on a trained run (seeded, clear errors)."""
from __future__ import annotations

import numpy as np
import pytest

from gir.cli import main
from gir.train.sample import generate, next_token


def test_temperature_zero_takes_the_most_likely_token():
    rng = np.random.default_rng(0)
    assert next_token(np.array([0.1, 3.0, 2.9]), 0.0, rng) == 1


def test_draws_follow_the_softmax_of_logits_over_temperature():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    rng = np.random.default_rng(1)
    draws = np.bincount([next_token(logits, 1.0, rng) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(draws, [0.5, 0.3, 0.2], atol=0.015)
    cold = np.bincount([next_token(logits, 0.25, rng) for _ in range(4000)], minlength=3) / 4000
    p = np.array([0.5, 0.3, 0.2]) ** 4
    assert np.allclose(cold, p / p.sum(), atol=0.025)


def test_generate_reads_the_last_real_position_of_a_right_padded_window():
    """A 'model' whose next token is one more than the token at each position: generation must read the logits at
    the last real token, also once the ids outgrow the window and it slides."""
    seen = []

    def logits_of(x):
        seen.append(x.copy())
        return np.eye(10)[(x + 1) % 10]   # [1, T, V]: position t predicts x[t] + 1

    out = generate(logits_of, np.array([3]), 12, 4, 0.0, 0)
    assert out.tolist() == [(3 + k) % 10 for k in range(1, 13)]
    assert seen[0].tolist() == [[3, 0, 0, 0]] and seen[-1].shape == (1, 4)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny char_gpt run on a short text (batch 4, T 16): one epoch, so one checkpoint."""
    root = tmp_path_factory.mktemp("text")
    corpus = root / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    run = root / "run"
    assert main(["train", "nets/char_gpt.py", "--data", f"text:{corpus}", "--batch", "4", "--seq", "16",
                 "--epochs", "1", "--out", str(run), "-q"]) == 0
    return run


def test_sample_is_deterministic_for_a_seed_and_continues_the_prompt(text_run, capsys):
    def sample(*args):
        assert main(["sample", str(text_run), "--prompt", "the ", "--tokens", "40", *args]) == 0
        return capsys.readouterr().out.rstrip("\n")

    a, b, c = sample("--seed", "3"), sample("--seed", "3"), sample("--seed", "4")
    assert a == b and a != c
    assert a.startswith("the ") and len(a) == len("the ") + 40
    assert set(a) <= set("the quick brown fox jumps over the lazy dog.\n")
    greedy = sample("--temperature", "0")
    assert greedy == sample("--temperature", "0", "--seed", "9")   # no randomness at temperature 0


@pytest.mark.parametrize("args, match", [
    (["--prompt", "XYZ"], "'X' is not in the vocabulary of"),
    (["--temperature", "-1"], "--temperature wants a number >= 0, got -1.0"),
])
def test_sample_errors_are_one_line(text_run, capsys, args, match):
    code = None
    try:
        code = main(["sample", str(text_run), *args])
    except SystemExit as e:   # argparse's own errors exit 2 with the usage line
        code = e.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_sampling_an_image_run_says_why_not(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "nets/digits_cnn.py", "--epochs", "1", "--out", str(run), "-q"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run)]) == 1
    assert "holds no vocabulary: it is not the run of a sequence net on text" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err
