"""README's performance table, generated from the saved output of the benchmarks (never typed by hand).

    .venv/bin/python benchmarks/gmm.py --quick --threads 1 | tee benchmarks/results/gmm_threads1.txt   (and 2)
    .venv/bin/python benchmarks/neighbors.py --quick --threads 1 | tee benchmarks/results/neighbors_threads1.txt
    .venv/bin/python benchmarks/sparse_conv.py --threads 1        # writes benchmarks/results/sparse_conv.md
    .venv/bin/python benchmarks/summarize.py                      # → README.md, between the perf markers

Every line of a saved output that carries a target verdict (met / MISSED, ✓ / ✗) becomes a row, under the
machine line the benchmark printed; the file it came from is named.
"""

from __future__ import annotations

import re
from pathlib import Path

from ssl3d.report import update_readme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
HEADING = re.compile(r"^(?:<!--.*?-->)?## (.*)$")  # a section heading, after an optional HTML comment
VERDICT = re.compile(r"\b(met|MISSED)\b|✓|✗")


def chunks(path: Path):
    """(title, lines): one per saved text output; one per '## ' section of a markdown results file."""
    lines = path.read_text().splitlines()
    name = str(path.relative_to(ROOT))
    if path.suffix != ".md" or not any(HEADING.match(ln) for ln in lines):
        yield name, lines
        return
    cur, title = [], None
    for ln in lines + ["## "]:
        m = HEADING.match(ln)
        if m:
            if title is not None:
                yield f"{name} — {title}", cur
            title, cur = m.group(1).strip(), []
        else:
            cur.append(ln)


def section(title: str, lines: list[str]) -> list[str]:
    out = [f"**`{title}`**", ""]
    out += [h.strip() for h in lines if h.startswith(("torch ", "Machine:", "Two notebooks"))][:2]
    out.append("")
    rows = [ln.rstrip() for ln in lines if VERDICT.search(ln)]
    if not rows:
        return out + ["(no target lines in this output)", ""]
    if rows[0].lstrip().startswith("|"):
        table, seen = [], set()
        for r in rows:  # each verdict row under the header of its own table
            k = lines.index(r)
            hdr = next(k2 for k2 in range(k, -1, -1) if lines[k2].startswith("|---")) - 1
            if hdr not in seen:
                seen.add(hdr)
                table += ([""] if table else []) + lines[hdr:hdr + 2]
            table.append(r)
            small = [ln for ln in lines[hdr + 2:] if ln.startswith("|")]
            if len(small) <= 4 and all(ln in lines[hdr + 2:hdr + 2 + len(small)] for ln in small):
                table[-1:] = small  # a short table (e.g. contention's): all its rows, they are the measurement
        return out + table + [""]
    first = next((k for k, ln in enumerate(lines) if "target" in ln), lines.index(rows[0]))
    last = max(k for k, ln in enumerate(lines) if VERDICT.search(ln))
    return out + ["```"] + [ln.rstrip() for ln in lines[first:last + 1]] + ["```", ""]  # with the column headers


def main() -> None:
    files = sorted(RESULTS.glob("*_threads*.txt")) + sorted(RESULTS.glob("*.md"))
    body = []
    for f in files:
        for title, lines in chunks(f):
            body += section(title, lines)
    update_readme(ROOT / "README.md", "\n".join(body) + "\n", BEGIN, END)
    print(f"README.md: performance table from {len(files)} result file(s)")


if __name__ == "__main__":
    main()
