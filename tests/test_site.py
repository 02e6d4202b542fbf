"""The static site of the executed notebooks (ssl3d.site): built from a tiny hand-made notebook, and from runs/smoke/.

The browser tests open every page in headless Chromium (Debian's ``chromium``, installed by
``lib/env/install_browser.sh``). Without Chromium, or without the executed notebooks of ``./reproduce.sh``, they skip
with a message saying what to do — except under CI (the environment variable ``CI`` is set), where both are
installed/run before pytest, so a missing one is a failure.
"""

import base64
import io
import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from ssl3d import site

ROOT = Path(__file__).resolve().parents[1]
IN_CI = bool(os.environ.get("CI"))


def _skip_or_fail(msg: str):
    if IN_CI:
        pytest.fail(f"{msg} (CI is set, so this is a failure, not a skip)")
    pytest.skip(msg)


def _png(color: str, seed: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot(np.random.default_rng(seed).normal(size=20).cumsum(), color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path: Path, title: str, sections: list[str], n_images: int, printed: str) -> Path:
    """A tiny 'executed' notebook: a title, ## sections, one printed result and n_images PNG outputs."""
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\nSome text with $x^2$.")]
    for k, sec in enumerate(sections):
        cells.append(nbformat.v4.new_markdown_cell(f"## {sec}\nProse."))
        code = nbformat.v4.new_code_cell("print(...)", execution_count=k + 1)
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{printed} {k}\n")]
        if k < n_images:
            code.outputs.append(nbformat.v4.new_output("display_data", data={"image/png": _png(f"C{k}", k),
                                                                             "text/plain": "<Figure>"}))
        cells.append(code)
    for k in range(len(sections), n_images):  # more images than sections: extra figure cells at the end
        code = nbformat.v4.new_code_cell("fig", execution_count=k + 1)
        code.outputs = [nbformat.v4.new_output("execute_result", data={"image/png": _png("k", k)},
                                               execution_count=k + 1)]
        cells.append(code)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two executed notebooks and the site built from them: (runs folder, site folder, pages)."""
    runs = tmp_path_factory.mktemp("runs")
    _executed(runs / "00_tiny.ipynb", "00 · Tiny & small", ["1. First part", "Checks"], 1, "result =")
    _executed(runs / "01_more.ipynb", "01 · More figures", ["1. Data", "2. Plots"], 3, "loss =")
    nbs = site.executed_notebooks(runs_dir=runs, stems=["00_tiny", "01_more"])
    out = tmp_path_factory.mktemp("web") / "site"
    pages = site.build_site(nbs, out, source_dir=runs)
    return runs, out, pages


def test_build_writes_pages_index_and_nav(tiny):
    runs, out, pages = tiny
    assert sorted(p.name for p in out.iterdir()) == [".ssl3d-site", "00_tiny.html", "01_more.html", "index.html"]
    assert [(p.title, p.n_images) for p in pages] == [("00 · Tiny & small", 1), ("01 · More figures", 3)]
    assert [t for t, _ in pages[1].sections] == ["1. Data", "2. Plots"]
    index = (out / "index.html").read_text()
    assert "00 · Tiny &amp; small" in index and "01 · More figures" in index
    for p in pages:
        for text, sid in p.sections:
            assert f'href="{p.file}#{sid}"' in index, f"the contents link {text!r}"
    first, second = ((out / p.file).read_text() for p in pages)
    assert first.count('src="data:image/png;base64,') == 1 and second.count('src="data:image/png;base64,') == 3
    assert "result = 0" in first and "loss = 1" in second, "printed results are on the page"
    assert 'href="01_more.html">01 · More figures →' in first and "← 00 · Tiny &amp; small" in second
    assert first.count('href="index.html">Contents') == 2, "nav bar at the top and the bottom"
    assert not [p for p in out.parent.iterdir() if p.name != "site"], "no temporary folder left behind"


def test_rebuild_replaces_only_a_site(tiny, tmp_path, monkeypatch):
    runs, _, _ = tiny
    nbs = site.executed_notebooks(runs_dir=runs, stems=["00_tiny"])
    out = tmp_path / "site"
    site.build_site(nbs, out)
    (out / "stale.html").write_text("old")
    site.build_site(nbs, out)
    assert not (out / "stale.html").exists(), "a rebuild replaces the whole folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    before = (out / "index.html").read_text()

    def boom(*args):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as m:
        m.setattr(site, "_index", boom)
        with pytest.raises(RuntimeError, match="interrupted"):
            site.build_site(nbs, out)
    assert (out / "index.html").read_text() == before, "a failed build leaves the previous site as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"], "and no temporary folder"
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="not a site built by ssl3d.site"):
        site.build_site(nbs, precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_missing_executed_notebook_says_run_reproduce(tiny):
    runs, _, _ = tiny
    with pytest.raises(site.MissingRunsError, match=r"lacks the executed notebook\(s\) 02_gone.*\./reproduce\.sh"):
        site.executed_notebooks(runs_dir=runs, stems=["00_tiny", "02_gone"])


def test_cli_reports_missing_runs(monkeypatch, capsys, tmp_path):
    def missing(profile):
        raise site.MissingRunsError("site: runs/full lacks ... Run `./reproduce.sh --profile full` first")

    monkeypatch.setattr(site, "executed_notebooks", missing)
    assert site.main(["--profile", "full", "--out", str(tmp_path / "s")]) == 1
    assert "./reproduce.sh --profile full" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------ in a browser

@pytest.fixture(scope="module")
def browser():
    if site.find_chromium() is None:
        _skip_or_fail("no Chromium: install it with `bash lib/env/install_browser.sh` (as root) to run the "
                      "browser tests")
    with site.Chromium() as b:
        yield b


def test_tiny_site_renders_in_chromium(tiny, browser, tmp_path):
    _, out, pages = tiny
    reports = site.check_site(out, pages, browser)
    assert {f: r["problems"] for f, r in reports.items() if r["problems"]} == {}
    assert reports["01_more.html"]["images"] == 3 and reports["00_tiny.html"]["title"] == "00 · Tiny & small"
    # The checks can fail: a broken image, a blank figure, a missing anchor and a blank page are all reported.
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), "white").save(buf, format="PNG")
    white = f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="blank">'
    bad = tmp_path / "bad.html"
    page = (out / "00_tiny.html").read_text()
    bad.write_text(page.replace("<main>", f'<main><img src="nope.png" alt="x">{white}', 1))
    rep = site.check_page(browser, bad, ["no-such-section"])
    assert rep["images"] == 3 and len(rep["broken"]) == 1 and rep["missing_anchors"] == ["#no-such-section"]
    assert rep["blank_figures"] == [1], "the all-white image is blank; the real figure is not"
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert "blank" in " ".join(site.check_page(browser, blank)["problems"])


def _png_outputs(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_executed_notebooks_site_renders_in_chromium(browser, tmp_path):
    """The real thing: every page of the site built from runs/smoke/ loads, shows all its figures, none blank."""
    try:
        nbs = site.executed_notebooks("smoke")
    except site.MissingRunsError as exc:
        _skip_or_fail(f"{exc} — this test reads the notebooks executed by ./reproduce.sh")
    t0 = time.perf_counter()
    pages = site.build_site(nbs, tmp_path / "site")
    t_build = time.perf_counter() - t0
    reports = site.check_site(tmp_path / "site", pages, browser)
    t_check = time.perf_counter() - t0 - t_build
    print(f"site of {len(pages)} notebooks: built in {t_build:.1f}s, checked in Chromium in {t_check:.1f}s")
    assert len(reports) == len(nbs) + 1
    for nb, page in zip(nbs, pages):
        rep = reports[page.file]
        assert rep["problems"] == [], f"{page.file}: {rep['problems']}"
        assert rep["images"] == _png_outputs(nb) > 0, f"{page.file}: one <img> per image/png output"
        assert rep["screenshot_std"] > 8 and not rep["broken"]
        assert len(page.sections) >= 2, f"{page.file}: its ## sections are in the table of contents"
    assert reports["index.html"]["problems"] == []


def test_reproduce_html_runs_what_is_missing_then_builds(monkeypatch, tmp_path, capsys):
    """`./reproduce.sh --html`: executes the notebooks without an executed copy (kernel with SSL3D_STATIC=1, so an
    interactive cell leaves one static figure), reuses the others, and builds the site."""
    from ssl3d import reproduce, utils

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "runs" / "smoke").mkdir(parents=True)
    _executed(root / "runs" / "smoke" / "00_done.ipynb", "00 · Already executed", ["Checks"], 1, "old =")
    (root / "notebooks" / "00_done.ipynb").write_text("{}")  # its executed copy exists: not run again
    params = nbformat.v4.new_code_cell("profile = 'smoke'")
    params.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell("# 01 · Play\n## Slider"), params, nbformat.v4.new_code_cell(
        "import os\nimport matplotlib.pyplot as plt\nfrom ssl3d import plot as P\n"
        "print('SSL3D_STATIC =', os.environ.get('SSL3D_STATIC'))\n"
        "def draw(J=8):\n    fig, ax = plt.subplots(figsize=(2, 2))\n    ax.plot(range(J))\n    return fig\n"
        "P.interactive(draw, J=(2, 16))")]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "01_play.ipynb")
    monkeypatch.setattr(reproduce, "repo_root", lambda: root)
    monkeypatch.setattr(utils, "repo_root", lambda: root)
    monkeypatch.delenv("SSL3D_STATIC", raising=False)

    assert reproduce.main(["--html", str(tmp_path / "web")]) == 0
    out = capsys.readouterr().out
    assert "reuses 1 executed notebook(s) in runs/smoke/ (00_done)" in out and "01_play.ipynb" in out
    executed = nbformat.read(root / "runs" / "smoke" / "01_play.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("SSL3D_STATIC = 1" in o.get("text", "") for o in outputs), "the kernel got SSL3D_STATIC=1"
    assert any("static frame with J=8" in o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1, "one static frame, shown once"
    assert "SSL3D_STATIC" not in os.environ, "the runner restores the environment"
    page = (tmp_path / "web" / "01_play.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "static frame with J=8" in page
    assert (tmp_path / "web" / "00_done.html").is_file() and (tmp_path / "web" / "index.html").is_file()
