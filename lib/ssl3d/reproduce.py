"""The notebook runner behind ``./reproduce.sh``: execute the numbered notebooks in order with papermill.

    python -m ssl3d.reproduce [--profile smoke|full] [--data-root DIR] [--only NAME ...]

- ``smoke`` runs each notebook with the defaults of its ``parameters`` cell (CPU, minutes, embedded data).
- ``full`` adds ``-f configs/full/<stem>.yaml`` (the papers' settings; GPU + real data under ``--data-root``).
- Executed notebooks go to ``runs/<profile>/<stem>.ipynb``, written to a temporary file and moved into place
  only when the notebook succeeded; figures are written atomically by :mod:`ssl3d.plot`.
- The first failure stops the run, names the notebook and the failing cell, and exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ssl3d.utils import repo_root

__all__ = ["list_notebooks", "run_notebook", "main"]


def list_notebooks(root: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``notebooks/NN_*.ipynb`` in order; ``only`` filters by stem or number prefix."""
    root = root or repo_root()
    nbs = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        picked = [p for p in nbs if any(p.stem == o or p.stem.startswith(o) or p.name == o for o in only)]
        if not picked:
            names = ", ".join(p.stem for p in nbs)
            raise SystemExit(f"reproduce: --only {' '.join(only)} matches no notebook (have: {names})")
        nbs = picked
    return nbs


def _params_for(stem: str, profile: str, data_root: str | None, root: Path) -> tuple[dict, Path | None]:
    params: dict = {"profile": profile}
    cfg = None
    if profile == "full":
        cfg = root / "configs" / "full" / f"{stem}.yaml"
        if not cfg.is_file():
            raise SystemExit(f"reproduce: no full-profile config {cfg} for notebook {stem}")
    if data_root is not None:
        params["data_root"] = str(Path(data_root).resolve())
    return params, cfg


def run_notebook(path: Path, profile: str = "smoke", data_root: str | None = None, out_dir: Path | None = None):
    """Execute one notebook with papermill; returns the executed notebook's path. Raises on failure."""
    import papermill as pm
    import yaml

    root = repo_root()
    out_dir = out_dir or root / "runs" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    params, cfg = _params_for(path.stem, profile, data_root, root)
    if cfg is not None:
        params = {**yaml.safe_load(cfg.read_text()), **params}
    final = out_dir / path.name
    tmp = out_dir / f".{path.stem}.partial.ipynb"
    try:
        pm.execute_notebook(str(path), str(tmp), parameters=params, kernel_name="python3", cwd=str(path.parent),
                            progress_bar=False, log_output=False)
    except BaseException:
        if tmp.exists():  # keep the failed run for inspection, never in place of a good one
            os.replace(tmp, out_dir / f"{path.stem}.FAILED.ipynb")
        raise
    os.replace(tmp, final)
    (out_dir / f"{path.stem}.FAILED.ipynb").unlink(missing_ok=True)
    return final


def _describe_failure(exc: BaseException) -> str:
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    src = (getattr(exc, "source", "") or "").strip().splitlines()
    if src:
        where += f" (starting `{src[0][:80]}`)"
    return f"{where} raised {ename}: {evalue}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="reproduce.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=["smoke", "full"], default="smoke")
    ap.add_argument("--data-root", default=None, help="folder holding the real datasets (full profile)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these notebooks (stem or NN prefix)")
    args = ap.parse_args(argv)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        print(f"reproduce: --data-root {args.data_root} is not a folder", file=sys.stderr)
        return 2
    nbs = list_notebooks(only=args.only)
    print(f"reproduce: profile={args.profile}, {len(nbs)} notebook(s)", flush=True)
    summary, t_all = [], time.perf_counter()
    for nb in nbs:
        t0 = time.perf_counter()
        print(f"  ▶ {nb.name} …", flush=True)
        try:
            out = run_notebook(nb, args.profile, args.data_root)
        except Exception as exc:  # papermill.PapermillExecutionError and friends
            dt = time.perf_counter() - t0
            summary.append((nb.stem, "FAILED", dt))
            _print_summary(summary, time.perf_counter() - t_all)
            print(f"\nreproduce: {nb.name} failed after {dt:.0f}s — {_describe_failure(exc)}", file=sys.stderr)
            print(f"reproduce: the partial run is in runs/{args.profile}/{nb.stem}.FAILED.ipynb; rerun with "
                  f"--only {nb.stem}", file=sys.stderr)
            return 1
        dt = time.perf_counter() - t0
        summary.append((nb.stem, "ok", dt))
        print(f"    ok in {dt:.0f}s → {out.relative_to(repo_root())}", flush=True)
    _print_summary(summary, time.perf_counter() - t_all)
    return 0


def _print_summary(rows, total):
    print("\nnotebook                          status   wall time")
    for stem, status, dt in rows:
        print(f"{stem:<33} {status:<8} {dt:7.1f} s")
    print(f"{'total':<33} {'':<8} {total:7.1f} s")


if __name__ == "__main__":
    sys.exit(main())
