"""`python -m kit.runs`: one table of every run dir under a folder (kit/evaluate/runs.py)."""
import argparse
from pathlib import Path

from kit.core.atomic import write_text
from kit.core.entry import Parser, main_guard, nonempty
from kit.evaluate import runs


def main() -> None:
    p = Parser(description=runs.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir", nargs="?", default="runs", type=nonempty, help="the folder of run dirs (default runs)")
    p.add_argument("--sort", default="cv", choices=["cv", "name", "seconds"], help="row order (default cv: best first)")
    p.add_argument("--md", type=nonempty, metavar="FILE", help="also write the table to this Markdown file")
    args = p.parse_args()
    text = runs.runs_table(args.runs_dir, args.sort)
    if args.md:
        write_text(Path(args.md), text)
    print(text, end="")


if __name__ == "__main__":
    main_guard(main)
