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
    assert "| method | 1/class | 5/class |" in table
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


def test_markdown_table_puts_every_regime_of_a_task_in_one_table_up_to_100_percent():
    """Scenes: limited annotations, limited reconstructions and every label side by side, headline metric only."""
    recs = []
    for seed in range(2):
        for regime, budget, v in (("full", 1.0, 60.0), ("annotations", 20, 30.0), ("reconstructions", 0.25, 40.0)):
            for metric, shift in (("miou", 0.0), ("accuracy", 25.0)):
                recs.append({"method": "m", "task": "scenes", "protocol": "finetune_semseg", "regime": regime,
                             "budget": budget, "seed": seed, "metric": metric, "value": v + shift + seed})
    table = report.markdown_table(recs, profile="smoke")
    assert "**scenes · finetune_semseg · miou**" in table and "accuracy" not in table.split("\n", 2)[2]
    assert "| method | 20 pts/room | 25 % rooms | 100 % |" in table
    assert "| m | 30.50 ± 0.71 | 40.50 ± 0.71 | 60.50 ± 0.71 |" in table


def test_readme_table_is_the_one_generated_from_the_committed_csv(tmp_path):
    """README's transfer table is never typed by hand: its body is markdown_table(results/smoke/transfer.csv) (the
    header line names the commit and machine that generated it, so it is compared separately)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    csv_path = root / "results" / "smoke" / "transfer.csv"
    # the committed CSV: running the notebooks (as CI does before the tests) rewrites the working copy
    shown = subprocess.run(["git", "show", "HEAD:results/smoke/transfer.csv"], cwd=root, capture_output=True,
                           text=True)
    if shown.returncode == 0:
        csv_path = Path(tmp_path) / "transfer.csv"
        csv_path.write_text(shown.stdout)
    text = (root / "README.md").read_text()
    assert report.BEGIN in text and report.END in text, "README lacks the generated transfer-table block"
    block = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0].strip("\n")
    generated = report.markdown_table(report.read_records(csv_path), "smoke",
                                      source="results/smoke/transfer.csv").strip("\n")
    header, body = block.split("\n", 1)
    assert header.startswith("Profile `smoke`, commit `") and "python -m ssl3d.report" in header
    assert body == generated.split("\n", 1)[1], "regenerate it: python -m ssl3d.report results/smoke/transfer.csv " \
                                                "--readme README.md"
