"""Committed notebooks are clean, parameterised and match their full-profile configs."""

import ast
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"
    assert NOTEBOOKS[0].stem == "00_point_clouds_101"


def _params(nb) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    out = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), "the parameters cell holds only assignments"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert not c.get("outputs"), f"{path.name}: commit notebooks with outputs cleared"
            assert c.get("execution_count") is None, f"{path.name}: execution counts must be cleared"
    params = _params(nb)
    for key in ("profile", "data_root", "seed"):
        assert key in params, f"{path.name}: parameters cell lacks '{key}'"
    assert params["profile"] == "smoke", "the parameters cell holds the smoke defaults"
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    assert "assert" in "".join(last["source"]), f"{path.name}: must end with an assertion cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_full_config_matches_parameters(path):
    cfg = ROOT / "configs" / "full" / f"{path.stem}.yaml"
    assert cfg.is_file(), f"missing {cfg.relative_to(ROOT)}"
    full = yaml.safe_load(cfg.read_text()) or {}
    params = _params(json.loads(path.read_text()))
    unknown = set(full) - set(params)
    assert not unknown, f"{cfg.name} sets {unknown}, which the notebook's parameters cell does not define"
    assert "profile" not in full, "profile is set by reproduce.sh, not by the config"
