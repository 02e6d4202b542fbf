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


# ------------------------------------------------------------------------------- interactive cells and 3D views

CONTROLS = dict(J=(4, 32, 4), covariance=["full", "diag", "spherical"], tau=(0.01, 1.0), k=(1, 10),
                step=(0, 10, 3), voxel={"fine": 0.02, "coarse": 0.05}, pairs=[("two", 2), ("three", 3)],
                flag=True, name="room", n=7)


def _recorder():
    calls = []

    def fn(J=8, covariance="diag", tau=0.07, k=3, step=0, voxel=0.05, pairs=9, flag=False, name="", n=0,
           untouched="kept"):
        calls.append(dict(J=J, covariance=covariance, tau=tau, k=k, step=step, voxel=voxel, pairs=pairs, flag=flag,
                          name=name, n=n, untouched=untouched))
        return f"frame J={J}"

    return fn, calls


def test_interactive_static_calls_fn_once_with_the_widgets_start_values(capsys):
    import ipywidgets

    fn, calls = _recorder()
    out = P.interactive(fn, static=True, **CONTROLS)
    assert out == "frame J=8" and len(calls) == 1, "fn is called once and its result returned"
    # fn's default where it fits the control, else the middle of the range / the first choice, like ipywidgets.
    assert calls[0] == dict(J=8, covariance="diag", tau=0.07, k=3, step=0, voxel=0.05, pairs=2, flag=True,
                            name="room", n=7, untouched="kept")
    ratio = ipywidgets.FloatSlider(value=0.6, min=0.0, max=0.9)
    assert P.interactive(lambda ratio=0.1, J=0: (ratio, J), static=True, ratio=ratio, J=ipywidgets.fixed(3)) == (0.6, 3)
    assert "static frame with" in capsys.readouterr().out
    # The same rule, checked against the widgets ipywidgets itself builds (fn without defaults).
    seen = []

    def bare(J, covariance, tau, k, step, voxel, pairs, flag, name, n):
        seen.append(dict(J=J, covariance=covariance, tau=tau, k=k, step=step, voxel=voxel, pairs=pairs, flag=flag,
                         name=name, n=n))

    P.interactive(bare, static=True, **CONTROLS)
    w = P.interactive(bare, static=False, **CONTROLS)
    assert {c.description: c.value for c in w.kwargs_widgets} == seen[0] == seen[1]
    # Without fn defaults: the middle of a range (on its step grid), the first choice.
    assert seen[0] == dict(J=16, covariance="full", tau=0.505, k=5, step=3, voxel=0.02, pairs=2, flag=True,
                           name="room", n=7)


def test_interactive_static_shows_a_returned_figure_once():
    import matplotlib.pyplot as plt

    def draw(J=8):
        fig, ax = plt.subplots()
        ax.plot(range(J))
        return fig

    before = set(plt.get_fignums())
    fig = P.interactive(draw, static=True, J=(2, 16))
    assert fig.axes[0].lines[0].get_xdata()[-1] == 7, "fn's default J=8 is used"
    assert set(plt.get_fignums()) == before, "the returned figure is closed: the inline backend won't show it again"


def test_interactive_live_builds_widgets_and_reruns_fn():
    import ipywidgets

    fn, calls = _recorder()
    w = P.interactive(fn, static=False, J=(4, 32, 4), covariance=["full", "diag"])
    assert isinstance(w, ipywidgets.interactive)
    sliders = {c.description: c for c in w.children if isinstance(c, ipywidgets.ValueWidget)}
    assert isinstance(sliders["J"], ipywidgets.IntSlider) and sliders["J"].value == 8
    assert len(calls) == 1 and w.result == "frame J=8", "interact draws the first frame at once"
    sliders["J"].value = 16
    assert calls[-1]["J"] == 16 and w.result == "frame J=16"


def test_interactive_rejects_unknown_controls():
    with pytest.raises(TypeError, match=r"no argument\(s\) \['tau'\]"):
        P.interactive(lambda J=1: J, static=True, tau=(0.0, 1.0))
    with pytest.raises(TypeError, match="cannot make a control"):
        P.interactive(lambda J=1: J, static=True, J=object())


def test_is_static_rules(monkeypatch):
    import IPython

    monkeypatch.delenv("SSL3D_STATIC", raising=False)
    assert P.is_static() is True, "pytest is not a Jupyter kernel: no widget frontend"
    assert P.is_static(False) is False and P.is_static(True) is True
    monkeypatch.setenv("SSL3D_STATIC", "1")
    assert P.is_static() is True
    monkeypatch.setenv("SSL3D_STATIC", "0")
    assert P.is_static() is False
    monkeypatch.setenv("SSL3D_STATIC", "maybe")
    with pytest.raises(ValueError, match="SSL3D_STATIC must be"):
        P.is_static()
    monkeypatch.delenv("SSL3D_STATIC")

    class Kernel:
        _allow_stdin = False

    class Shell:
        kernel = Kernel()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert P.is_static() is True, "papermill / nbval run cells with stdin disabled"
    Kernel._allow_stdin = True
    assert P.is_static() is False, "a live frontend (JupyterLab, VS Code) allows stdin"


def _decode(image):
    import io

    import matplotlib.pyplot as plt

    return (plt.imread(io.BytesIO(image.data), format="png")[..., :3] * 255).astype(np.uint8)


def test_show3d_falls_back_to_a_static_render(monkeypatch):
    from IPython.display import Image

    pts = np.random.default_rng(0).normal(size=(400, 3))
    img = P.show3d(pts, labels=np.arange(400) % 4, static=True, window_size=(160, 120))
    assert isinstance(img, Image) and img.format == "png"
    pix = _decode(img)
    assert pix.shape == (120, 160, 3) and 0.02 < (pix < 240).any(-1).mean() < 0.9
    # Live, but without pyvista's Jupyter backend (trame) → the same static picture.
    monkeypatch.setattr(P, "_trame_viewer_available", lambda: False)
    rgb = P.show3d(pts, colors=np.abs(pts) / np.abs(pts).max(), static=False, window_size=(160, 120))
    assert isinstance(rgb, Image) and _decode(rgb).shape == (120, 160, 3)
    scal = _decode(P.show3d(pts, colors=pts[:, 2], static=True, window_size=(160, 120)))
    assert len(np.unique(scal.reshape(-1, 3), axis=0)) > 10, "scalars are mapped through a colormap"


def test_show3d_rejects_mismatched_colors():
    pts = np.zeros((10, 3))
    with pytest.raises(ValueError, match="10 points"):
        P.show3d(pts, colors=np.zeros((9, 3)), static=True)
    with pytest.raises(ValueError, match=r"\(N, 3\) RGB or \(N,\) scalars"):
        P.show3d(pts, colors=np.zeros((10, 4)), static=True)


def test_show3d_live_uses_trame_when_installed():
    """Only with pyvista's optional Jupyter extra (README "Interactive 3D views"): the live path returns its viewer."""
    pytest.importorskip("trame_pyvista", reason="pyvista's Jupyter backend (trame) is an optional extra")
    if not P._trame_viewer_available():
        pytest.skip("trame_pyvista is installed but does not load")
    view = P.show3d(np.random.default_rng(0).normal(size=(100, 3)), labels=np.arange(100) % 3, static=False)
    assert "localhost" in view.src, "an iframe onto the local trame server"


def test_pca_rgb_maps_principal_components_to_channels():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3)) * np.array([5.0, 2.0, 0.5])  # three directions of decreasing variance
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    x = z @ q[:3] + 3.0  # (500, 8): the directions rotated into 8-d and shifted
    rgb, state = P.pca_rgb(x)
    assert rgb.shape == (500, 3) and rgb.min() >= 0 and rgb.max() <= 1
    for c in range(3):  # channel c follows the c-th largest direction (up to sign)
        assert abs(np.corrcoef(rgb[:, c], z[:, c])[0, 1]) > 0.95
    again, _ = P.pca_rgb(x[:10], *state)  # the same basis reproduces the colours of a subset
    np.testing.assert_allclose(again, rgb[:10])
    flat, _ = P.pca_rgb(np.ones((4, 5)))
    np.testing.assert_allclose(flat, 0.5 * np.ones((4, 3)))
    with pytest.raises(ValueError, match="finite"):
        P.pca_rgb(np.full((3, 4), np.nan))
