"""The notebook runner behind ``./reproduce.sh``: execute the numbered notebooks in order with papermill.

    python -m ssl3d.reproduce [--profile smoke|full] [--data-root DIR] [--only NAME ...] [--html [DIR]]

- ``smoke`` runs each notebook with the defaults of its ``parameters`` cell (CPU, minutes, embedded data).
- ``full`` adds ``-f configs/full/<stem>.yaml`` (the papers' settings; GPU + real data under ``--data-root``).
- Executed notebooks go to ``runs/<profile>/<stem>.ipynb``, written to a temporary file and moved into place
  only when the notebook succeeded; figures are written atomically by :mod:`ssl3d.plot`.
- The first failure stops the run, names the notebook and the failing cell, and exits non-zero.
- ``--html [DIR]`` then builds the static site of the executed notebooks (:mod:`ssl3d.site`) into DIR (default
  ``<repo>/site``). With ``--html`` only the notebooks that have no executed copy in ``runs/<profile>/`` run (all
  of them the first time; ``--only`` names notebooks to rerun anyway).
- Kernels run with ``SSL3D_STATIC=1`` (unless set): interactive cells (``ssl3d.plot.interactive``/``show3d``)
  render one static frame into the executed notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ssl3d.utils import list_notebooks, repo_root  # noqa: F401  (list_notebooks: re-exported)

__all__ = ["list_notebooks", "run_notebook", "main"]


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
    static_before = os.environ.get("SSL3D_STATIC")
    os.environ.setdefault("SSL3D_STATIC", "1")  # inherited by the kernel: interactive cells draw one static frame
    try:
        pm.execute_notebook(str(path), str(tmp), parameters=params, kernel_name="python3", cwd=str(path.parent),
                            progress_bar=False, log_output=False)
    except BaseException:
        if tmp.exists():  # keep the failed run for inspection, never in place of a good one
            os.replace(tmp, out_dir / f"{path.stem}.FAILED.ipynb")
        raise
    finally:
        if static_before is None:
            os.environ.pop("SSL3D_STATIC", None)
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
    ap.add_argument("--html", nargs="?", const="", default=None, metavar="DIR",
                    help="then build the static site of the executed notebooks into DIR (default: <repo>/site); "
                         "runs only the notebooks missing from runs/<profile>/ unless --only is given")
    args = ap.parse_args(argv)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        print(f"reproduce: --data-root {args.data_root} is not a folder", file=sys.stderr)
        return 2
    nbs = list_notebooks(only=args.only)
    if args.html is not None and not args.only:
        done = [nb for nb in nbs if (repo_root() / "runs" / args.profile / nb.name).is_file()]
        if done:
            print(f"reproduce: --html reuses {len(done)} executed notebook(s) in runs/{args.profile}/ "
                  f"({', '.join(nb.stem for nb in done)}); `./reproduce.sh` reruns them", flush=True)
        nbs = [nb for nb in nbs if nb not in done]
        if not nbs:
            return _build_html(args.profile, args.html)
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
    if args.html is not None:
        return _build_html(args.profile, args.html)
    return 0


def _build_html(profile: str, out: str) -> int:
    """``--html``: the static site of ``runs/<profile>/`` (see :mod:`ssl3d.site`) into ``out`` or ``<repo>/site``."""
    from ssl3d import site

    dest = Path(out) if out else repo_root() / "site"
    t0 = time.perf_counter()
    try:
        pages = site.build_site(site.executed_notebooks(profile), dest)
    except (site.MissingRunsError, FileExistsError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"\nreproduce: static site of {len(pages)} notebooks ({sum(p.n_images for p in pages)} figures) → "
          f"{dest / 'index.html'} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def _print_summary(rows, total):
    print("\nnotebook                          status   wall time")
    for stem, status, dt in rows:
        print(f"{stem:<33} {status:<8} {dt:7.1f} s")
    print(f"{'total':<33} {'':<8} {total:7.1f} s")


if __name__ == "__main__":
    sys.exit(main())
