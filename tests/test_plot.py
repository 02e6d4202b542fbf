import numpy as np
import pytest
import torch

from ssl3d import plot as P


def test_render_points_draws_the_cloud(tmp_path):
    pts = torch.randn(500, 3)
    img = P.render_points(pts, labels=torch.arange(500) % 3, window_size=(160, 120), path="test_render")
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    non_white = (img < 240).any(-1).mean()
    assert 0.02 < non_white < 0.9, "the cloud occupies part of the picture"
    assert P.figure_path("test_render").is_file()
    assert not list(P.figures_dir().glob("*.tmp.png"))


def test_label_colors_distinct_and_ignore_grey():
    c = P.label_colors(np.array([0, 1, 2, -100]))
    assert len({tuple(x) for x in c[:3]}) == 3
    assert (c[3] == 160).all()


def test_render_rejects_bad_clouds():
    with pytest.raises(ValueError, match="empty"):
        P.render_points(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        P.render_points(np.full((3, 3), np.nan))
