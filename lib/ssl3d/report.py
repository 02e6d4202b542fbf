"""Results as files: the tidy CSV of protocol records, the Markdown table generated from it, README's results block.

    write_records(records, "results/smoke/transfer.csv")          # atomic; one row per measured number
    rows = read_records("results/smoke/transfer.csv")
    print(markdown_table(rows, profile="smoke"))                  # mean ± std over seeds, by method and budget
    python -m ssl3d.report results/smoke/transfer.csv --readme README.md    # rewrite README's results block

Numbers in README are never typed by hand: the block between ``<!-- transfer-table:begin -->`` and
``<!-- transfer-table:end -->`` is regenerated from the CSV, with the profile, commit and machine that produced it.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["write_records", "read_records", "markdown_table", "budget_label", "budget_columns", "HEADLINE", "machine",
           "update_readme", "main"]

BEGIN, END = "<!-- transfer-table:begin -->", "<!-- transfer-table:end -->"
COLUMNS = ("method", "backbone", "task", "protocol", "regime", "budget", "n_labeled", "label_fraction", "seed",
           "metric", "value")


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_records(records: list[dict], path: str | Path) -> Path:
    """Write protocol records as CSV (the columns of :data:`COLUMNS` first, any extra keys after), atomically."""
    if not records:
        raise ValueError("write_records: no records to write")
    extra = sorted({k for r in records for k in r} - set(COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *extra], extrasaction="raise")
    w.writeheader()
    for r in records:
        w.writerow({k: r.get(k, "") for k in (*COLUMNS, *extra)})
    return _atomic_write(Path(path), buf.getvalue())


def _parse(v: str):
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def read_records(path: str | Path) -> list[dict]:
    """The records of :func:`write_records` back (numbers parsed). A missing or empty file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/07_transfer_benchmark.ipynb (./reproduce.sh) "
                                f"to produce it")
    rows = [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(path.open())]
    if not rows or "value" not in rows[0]:
        raise ValueError(f"{path} holds no records (is it truncated?)")
    return rows


def machine() -> str:
    """A one-line description of this machine: CPU model and cores, or the GPU when one is visible."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ssl3d.utils import available_cores

    desc = f"{cpu}, {available_cores()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# the number each protocol is judged by in tables (the CSV keeps every metric)
HEADLINE = {"linear_svm": "accuracy", "finetune": "accuracy", "finetune_partseg": "instance_miou",
            "finetune_semseg": "miou"}
_ORDER = {"shapes_per_class": 0, "annotations": 0, "reconstructions": 1, "fraction": 2, "full": 3}


def budget_label(regime, budget) -> str:
    """A column heading for a label budget: "1/class", "25 %", "20 pts/room", "25 % rooms", "100 %"."""
    if regime == "full":
        return "100 %"
    if regime == "shapes_per_class":
        return f"{budget}/class"
    if regime == "annotations":
        return f"{budget} pts/room"
    if regime == "reconstructions":
        return f"{100 * float(budget):g} % rooms"
    if regime == "fraction":
        return f"{100 * float(budget):g} %"
    return f"{regime or ''} {budget}".strip()


def budget_columns(rows: list[dict]) -> list[tuple]:
    """The (regime, budget) columns of one table, from the smallest budget to every label."""
    cols = list(dict.fromkeys((r["regime"], r["budget"]) for r in rows))
    return sorted(cols, key=lambda c: (_ORDER.get(c[0], 1), float(c[1]) if c[1] is not None else 0.0))


def markdown_table(records: list[dict], profile: str, source: str = "", metric_names: dict | None = None,
                   metrics: dict | None = None) -> str:
    """One table per (task, protocol) with its headline metric (:data:`HEADLINE`, or ``metrics``), one row per
    method, one column per label budget from the smallest to 100 % ("mean ± std" over seeds; every regime of the
    task and protocol side by side). The header line states the profile, the commit, the machine and the seeds."""
    from ssl3d.evaluate import mean_std

    headline = {**HEADLINE, **(metrics or {})}
    groups: dict[tuple, list[float]] = {}  # (task, protocol, regime, budget, metric, method) → values over seeds
    for r in records:
        if r["metric"] == headline.get(r["protocol"], r["metric"]):
            key = tuple(r.get(k) for k in ("task", "protocol", "regime", "budget", "metric", "method"))
            groups.setdefault(key, []).append(r["value"])
    rows = [dict(zip(("task", "protocol", "regime", "budget", "metric", "method"), k), text=mean_std(v)[2])
            for k, v in groups.items()]
    seeds = sorted({r.get("seed") for r in records})
    out = [f"Profile `{profile}`, commit `{_commit()}`, {machine()}; mean ± std over {len(seeds)} seeds"
           + (f"; generated from `{source}` by `python -m ssl3d.report`" if source else "") + ".", ""]
    for task, protocol in dict.fromkeys((r["task"], r["protocol"]) for r in rows):
        part = [r for r in rows if (r["task"], r["protocol"]) == (task, protocol)]
        cols = budget_columns(part)
        metric = part[0]["metric"]
        name = (metric_names or {}).get(metric, metric)
        cell = {(r["method"], r["regime"], r["budget"]): r["text"] for r in part}
        out += [f"**{task} · {protocol} · {name}**", "",
                "| method | " + " | ".join(budget_label(*c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
        for method in dict.fromkeys(r["method"] for r in part):
            out.append(f"| {method} | " + " | ".join(cell.get((method, *c), "—") for c in cols) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_readme(readme: str | Path, table: str, begin: str = BEGIN, end: str = END) -> Path:
    """Replace the text between the markers ``begin`` … ``end`` of ``readme`` (default: the transfer table's) by
    ``table`` (atomically)."""
    readme = Path(readme)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no '{begin}' … '{end}' block to update")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return _atomic_write(readme, f"{head}{begin}\n{table}{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssl3d.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="records written by notebook 07 (results/<profile>/transfer.csv)")
    ap.add_argument("--profile", default=None, help="profile name for the header (default: the CSV's folder name)")
    ap.add_argument("--readme", default=None, help="rewrite this README's transfer-table block")
    args = ap.parse_args(argv)
    path = Path(args.csv)
    try:
        records = read_records(path)
    except (FileNotFoundError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    table = markdown_table(records, args.profile or path.parent.name, source=str(path))
    if args.readme:
        update_readme(args.readme, table)
        print(f"report: updated {args.readme}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
