"""The notebook runner: order, filtering, failure reporting, no half-written outputs."""

import nbformat
import pytest

from ssl3d import reproduce


def _nb(path, *sources, params="x = 1"):
    cells = [nbformat.v4.new_code_cell(params)]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_list_notebooks_sorted_and_filtered():
    nbs = reproduce.list_notebooks()
    assert [p.name for p in nbs] == sorted(p.name for p in nbs)
    assert reproduce.list_notebooks(only=["00"])[0].stem == "00_point_clouds_101"
    with pytest.raises(SystemExit, match="matches no notebook"):
        reproduce.list_notebooks(only=["99_nope"])


def test_failure_names_cell_and_leaves_nothing(tmp_path):
    nb = _nb(tmp_path / "01_bad.ipynb", "y = x + 1", "raise ValueError('boom here')")
    out = tmp_path / "out"
    with pytest.raises(Exception) as ei:
        reproduce.run_notebook(nb, out_dir=out)
    assert "boom here" in reproduce._describe_failure(ei.value)
    assert "starting `raise ValueError('boom here')`" in reproduce._describe_failure(ei.value)
    assert [p.name for p in out.iterdir()] == ["01_bad.FAILED.ipynb"], "no partial file, no 'good' copy"


def test_success_writes_executed_copy_with_parameters(tmp_path):
    nb = _nb(tmp_path / "02_ok.ipynb", "assert profile == 'smoke' and x == 1\nprint('fine')")
    final = reproduce.run_notebook(nb, out_dir=tmp_path / "out")
    executed = nbformat.read(final, as_version=4)
    assert any("fine" in "".join(o.get("text", "")) for c in executed.cells for o in c.get("outputs", []))


def test_main_rejects_missing_data_root(capsys):
    assert reproduce.main(["--data-root", "/definitely/not/here", "--only", "00"]) == 2
    assert "not a folder" in capsys.readouterr().err
