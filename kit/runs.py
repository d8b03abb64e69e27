"""`python -m kit.runs`: one table of every run dir under a folder (kit/evaluate/runs.py)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit.core.atomic import write_text
from kit.core.entry import main_guard, option, parse_request
from kit.evaluate import runs


@dataclass
class RunsRequest:
    """kit.runs' flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    runs_dir: str = option("runs", "the folder of run dirs", positional=True, nargs="?")
    sort: str = option("cv", "row order (cv: best first)", choices=("cv", "name", "seconds"))
    md: Optional[str] = option(None, "also write the table to this Markdown file", metavar="FILE")


def main() -> None:
    r = parse_request(RunsRequest, description=runs.__doc__)
    text = runs.runs_table(r.runs_dir, r.sort)
    if r.md:
        write_text(Path(r.md), text)
    print(text, end="")


if __name__ == "__main__":
    main_guard(main)
