"""Writing one section of docs/performance.md: every bench script owns a `## ` section and replaces it."""
from __future__ import annotations

import datetime
import os
import platform

PATH = os.path.join(os.path.dirname(__file__), "..", "docs", "performance.md")


def machine_line(what: str) -> str:
    return (f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores "
            f"({platform.processor() or 'cpu'}), {what}")


def table_section(title: str, what: str, header: list[str], rows: list[str]) -> str:
    """A section: its title, the machine line saying `what`, and a Markdown table of `rows` under `header`."""
    return "\n".join([title, "", machine_line(what), "", f"| {' | '.join(header)} |",
                      f"| {' | '.join('---' for _ in header)} |", *rows])


def publish(title: str, text: str, write: bool) -> None:
    """Prints a script's section; with `write` (its --write flag) also files it in performance.md."""
    print(text)
    if write:
        write_section(title, text)


def write_section(title: str, text: str) -> None:
    """Replaces the section starting with `title` (or appends it), keeping the others."""
    old = open(PATH).read() if os.path.exists(PATH) else "# Performance\n\nEvery number here comes from a script in bench/.\n"
    head, sep, rest = old.partition(title)
    tail = rest[rest.find("\n## "):] if sep and "\n## " in rest else ""
    with open(PATH, "w") as f:
        f.write(head.rstrip() + "\n\n" + text.rstrip() + "\n" + tail)
