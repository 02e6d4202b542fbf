"""pytest setup shared by the unit tests (tests/) and the notebooks run under nbval (notebooks/).

Environment variables are set at import time, so the notebook kernels nbval starts inherit them: figures go to a
temporary folder, progress bars stay quiet, widget cells render one static frame, idle OpenMP threads sleep.

Executed copies: every notebook nbval runs is also written, with the outputs of this run, to
``runs/smoke/<stem>.ipynb`` (atomically, after its last cell) — the same place ``./reproduce.sh`` writes them — so
that ``./reproduce.sh --test`` executes each notebook once and the static-site test (tests/test_site.py, which runs
after the notebooks) renders these copies. nbval 0.11 keeps each cell's new outputs in ``item.test_outputs``.
The wall time of every notebook (first cell to last) is printed at the end of the run.
"""

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SSL3D_FIGURES", tempfile.mkdtemp(prefix="ssl3d-figures-"))
os.environ.setdefault("SSL3D_PROGRESS", "0")
os.environ.setdefault("SSL3D_STATIC", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (see ssl3d/__init__.py)

RUNS = Path(__file__).resolve().parent / "runs" / "smoke"
_NOTEBOOK_TIMES: dict[str, list[float]] = {}  # notebook → [start, end]


def pytest_runtest_setup(item):
    if type(item).__name__ == "IPyNbCell":
        _NOTEBOOK_TIMES.setdefault(Path(str(item.parent.fspath)).stem, [time.perf_counter(), 0.0])


def pytest_terminal_summary(terminalreporter):
    if not _NOTEBOOK_TIMES:
        return
    terminalreporter.section("notebook wall times")
    for stem, (start, end) in _NOTEBOOK_TIMES.items():
        terminalreporter.write_line(f"{stem:<34} {end - start:8.1f} s")
    total = sum(end - start for start, end in _NOTEBOOK_TIMES.values())
    terminalreporter.write_line(f"{'total':<34} {total:8.1f} s")


def pytest_runtest_teardown(item, nextitem):
    if type(item).__name__ != "IPyNbCell":
        return
    _NOTEBOOK_TIMES[Path(str(item.parent.fspath)).stem][1] = time.perf_counter()
    if item.test_outputs is not None:
        item.cell.outputs = list(item.test_outputs)
        item.cell.execution_count = item.cell_num + 1
    if nextitem is not None and getattr(nextitem, "parent", None) is item.parent:
        return  # not the notebook's last cell yet
    import nbformat

    RUNS.mkdir(parents=True, exist_ok=True)
    out = RUNS / Path(str(item.parent.fspath)).name
    tmp = out.with_name(out.name + ".partial")
    nbformat.write(item.parent.nb, str(tmp))
    os.replace(tmp, out)
