"""Rebuilds every committed figure and README results table from the records in results/.

  .venv/bin/python -m scripts.update_results            # `make results`
  .venv/bin/python -m scripts.update_results --check    # exit 1 if README.md is out of date

The README marks each generated table with `<!-- name -->` ... `<!-- /name -->`; the text between
the markers is replaced, nothing else is touched. scripts/reports.py defines the tables and
figures. A source with no runs yet leaves its figure alone and its table saying so, so this can
run at any point of a reproduction.
"""

from __future__ import annotations

import dataclasses
import re
import sys

from absl import app, flags

from scripts import reports

_README = flags.DEFINE_string("readme", "README.md", "The README whose marked blocks to rebuild.")
_RESULTS = flags.DEFINE_string("results", "results", "The committed records (and figures).")
_CHECK = flags.DEFINE_bool("check", False, "Only report whether README.md's tables are current; "
                           "write nothing.")


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replaces the text between `<!-- name -->` and `<!-- /name -->` for every named block
    present in `text`; blocks the text does not mark are ignored."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)",
                             re.DOTALL)
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def full_profile(results: str) -> reports.Profile:
    return dataclasses.replace(reports.PROFILES["full"], records_root=results, out_dir=results)


def update_readme(readme: str, results: str, check: bool) -> int:
    """Rebuilds the figures and README blocks (or with check, only compares); 1 if the README
    was (or, with check, is) out of date."""
    with open(readme) as f:
        old = f.read()
    new = replace_blocks(old, reports.build(full_profile(results), write_figures=not check))
    if check:
        print("README tables are current." if new == old else
              "README tables are out of date: run `make results`.")
        return int(new != old)
    with open(readme, "w") as f:
        f.write(new)
    print(f"Rebuilt figures in {results}/ and {'updated' if new != old else 'kept'} {readme}.")
    return 0


def main(argv):
    del argv
    status = update_readme(_README.value, _RESULTS.value, _CHECK.value)
    sys.exit(status if _CHECK.value else 0)


if __name__ == "__main__":
    app.run(main)
