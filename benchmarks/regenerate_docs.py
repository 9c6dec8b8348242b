"""Rerun every example and benchmark command that docs/ and the README name, at full size.

    python benchmarks/regenerate_docs.py --list          # the commands, nothing run
    python benchmarks/regenerate_docs.py                 # run them all, one after the other
    python benchmarks/regenerate_docs.py --only flowmc   # those whose text contains "flowmc"

The commands are read from the Markdown itself (inline code and ``bash`` blocks that start
with ``python examples/`` or ``python benchmarks/``), so the list cannot drift from the
docs. Each run's output goes to ``outputs/regenerate/NN_<script>.log`` and its wall time is
printed; the total is printed at the end. The full set takes many hours on a 2-core CPU
(the pages state each command's own time); ``benchmarks/mutation_check.py`` alone takes
about 25 minutes. Commands that differ only in their flags are all run: the docs quote each
configuration they report.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_INLINE = re.compile(r"`(python (?:examples|benchmarks)/[^`]+?)`", re.DOTALL)
_FENCE = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def commands(pages=PAGES) -> list[tuple[str, list[str]]]:
    """``(page name, argv)`` of every distinct command, in the order the pages give them."""
    found: dict[str, tuple[str, list[str]]] = {}
    for page in pages:
        text = page.read_text()
        spans = [m.group(1) for m in _INLINE.finditer(text)]
        for block in _FENCE.findall(text):
            block = re.sub(r"\\\s*\n", " ", block)  # continued lines
            spans += [ln for ln in block.splitlines() if ln.startswith("python ")]
        for span in spans:
            line = " ".join(re.sub(r"\\\s", " ", span + " ").split())
            line = line.split(" #")[0].strip()  # a trailing comment
            if not re.match(r"python (examples|benchmarks)/\w+\.py", line):
                continue
            found.setdefault(line, (page.name, shlex.split(line)))
    return list(found.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--list", action="store_true", help="print the commands and stop")
    p.add_argument("--only", default=None, help="run the commands whose text contains this")
    p.add_argument("--logs", default=str(ROOT / "outputs" / "regenerate"), help="log directory")
    args = p.parse_args(argv)
    todo = [(page, cmd) for page, cmd in commands() if not args.only or args.only in " ".join(cmd)]
    if args.list:
        for page, cmd in todo:
            print(f"{page:24s} {' '.join(cmd)}")
        print(f"{len(todo)} commands")
        return todo
    out = Path(args.logs)
    out.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    for i, (_page, cmd) in enumerate(todo):
        log = out / f"{i:02d}_{Path(cmd[1]).stem}.log"
        t0 = time.perf_counter()
        with open(log, "w") as f:
            rc = subprocess.call([sys.executable, *cmd[1:]], cwd=ROOT, stdout=f, stderr=f)
        print(f"[{i + 1}/{len(todo)}] {' '.join(cmd)}: exit {rc}, {time.perf_counter() - t0:.0f} s")
    print(f"total {(time.perf_counter() - total) / 3600:.2f} h; logs in {out}")
    return todo


if __name__ == "__main__":
    main()
