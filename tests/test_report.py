"""Results files: CSV round trip, the generated Markdown table, README's generated block."""

import pytest

from ssl3d import report


def records():
    out = []
    for method, vals in (("scratch", [40.0, 42.0, 44.0]), ("gmm", [50.0, 51.0, 52.0])):
        for seed, v in enumerate(vals):
            for budget, shift in ((1, 0.0), (5, 10.0)):
                out.append({"method": method, "backbone": "pointnet", "task": "objects", "protocol": "linear_svm",
                            "regime": "shapes_per_class", "budget": budget, "n_labeled": 14 * budget,
                            "label_fraction": budget / 30, "seed": seed, "metric": "accuracy", "value": v + shift,
                            "C": 0.01})
    return out


def test_csv_round_trip_and_atomic_write(tmp_path):
    path = report.write_records(records(), tmp_path / "r" / "t.csv")
    back = report.read_records(path)
    assert back == records()
    assert not list(tmp_path.glob("r/*.partial"))
    path.write_text("")
    with pytest.raises(ValueError, match="truncated"):
        report.read_records(path)
    with pytest.raises(FileNotFoundError, match="07_transfer_benchmark"):
        report.read_records(tmp_path / "missing.csv")


def test_markdown_table_is_mean_and_std_over_seeds():
    table = report.markdown_table(records(), profile="smoke")
    assert "Profile `smoke`" in table and "3 seeds" in table
    assert "| method | 1 | 5 |" in table
    assert "| scratch | 42.00 ± 2.00 | 52.00 ± 2.00 |" in table
    assert "| gmm | 51.00 ± 1.00 | 61.00 ± 1.00 |" in table


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    report.update_readme(readme, "new table\n")
    assert readme.read_text() == f"intro\n{report.BEGIN}\nnew table\n{report.END}\noutro\n"
    (tmp_path / "bad.md").write_text("no markers")
    with pytest.raises(ValueError, match="no"):
        report.update_readme(tmp_path / "bad.md", "x")


def test_update_readme_with_other_markers_leaves_the_transfer_table(tmp_path):
    """benchmarks/summarize.py writes README's performance block through the same function, with its own markers."""
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{report.BEGIN}\nT\n{report.END}\nb\n<!-- p:begin -->\nold\n<!-- p:end -->\nc\n")
    report.update_readme(readme, "perf\n", "<!-- p:begin -->", "<!-- p:end -->")
    assert readme.read_text() == f"a\n{report.BEGIN}\nT\n{report.END}\nb\n<!-- p:begin -->\nperf\n<!-- p:end -->\nc\n"
