"""Pictures: headless pyvista renders of point clouds and matplotlib figures, saved as PNG under figures/.

pyvista is set up for off-screen rendering on the first call (EGL on machines without a display), so
importing this module never opens a window and never prints X-server warnings into a notebook.
Figures are written atomically (temporary file, then rename): an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "figures_dir",
    "figure_path",
    "save_figure",
    "save_image",
    "budget_curves",
    "METHOD_COLORS",
    "label_colors",
    "pca_rgb",
    "render_points",
    "render_mesh",
    "render_voxels",
    "image_grid",
    "show_image",
]

_PV_READY = False
# Tab20-like palette: distinct, colour-blind friendlier first entries; label i → PALETTE[i % 20].
PALETTE = (plt.get_cmap("tab20")(np.arange(20))[:, :3] * 255).astype(np.uint8)
PALETTE = np.concatenate([PALETTE[0::2], PALETTE[1::2]])


def figures_dir() -> Path:
    """Where figures go: $SSL3D_FIGURES if set (tests use a temporary folder), else <repo>/figures."""
    env = os.environ.get("SSL3D_FIGURES")
    if env:
        d = Path(env)
    else:
        from ssl3d.utils import repo_root

        d = repo_root() / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def figure_path(name: str) -> Path:
    name = name if name.endswith(".png") else name + ".png"
    return figures_dir() / name


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure to figures/<name>.png (atomically) and return the path."""
    return _atomic(figure_path(name), lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", facecolor="white"))


def save_image(img: np.ndarray, name: str) -> Path:
    """Save an (H, W, 3|4) uint8 image to figures/<name>.png."""
    return _atomic(figure_path(name), lambda p: plt.imsave(p, img))


def label_colors(labels) -> np.ndarray:
    """(N,) integer labels → (N, 3) uint8 colours from the shared palette (negative = ignore → grey)."""
    lab = np.asarray(labels).astype(np.int64)
    out = PALETTE[np.mod(lab, len(PALETTE))].copy()
    out[lab < 0] = 160
    return out


def pca_rgb(features, basis=None, lo=None, hi=None):
    """Per-point features (N, C) → colours (N, 3) in [0, 1]: the first three principal components, each mapped
    to [0, 1] between its 1st and 99th percentile (clipped). Returns ``(rgb, (basis, lo, hi))``; pass that tuple
    back (``pca_rgb(g, *state)``) to colour other features in the *same* basis, so two clouds can be compared.
    With fewer than three non-constant directions the missing channels are 0.5."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"pca_rgb expects finite (N, C) features with N ≥ 1, got shape {x.shape}")
    if basis is None:
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        basis = (x.mean(0), vt[:3])
    mean, vt = basis
    z = (x - mean) @ vt.T  # (N, ≤3)
    if lo is None:
        lo, hi = np.percentile(z, 1, axis=0), np.percentile(z, 99, axis=0)
    varies = hi - lo > 1e-12
    channels = np.clip((z - lo) / np.where(varies, hi - lo, 1.0), 0.0, 1.0)
    channels[:, ~varies] = 0.5
    rgb = np.full((len(x), 3), 0.5)
    rgb[:, : z.shape[1]] = channels
    return rgb, (basis, lo, hi)


METHOD_COLORS = {"scratch": "#999999", "GMM": "#55a868", "ACT": "#c44e52", "PointContrast": "#4c72b0",
                 "image-to-point": "#dd8452"}


def budget_curves(ax, rows: list[dict], colors: dict | None = None):
    """Metric against label budget on ``ax``: one line per method with ±std bars, budgets as ordered categories from
    the smallest to 100 % (``rows``: :func:`ssl3d.protocols.summarize` output with regime, budget, method, mean, std).
    """
    from ssl3d.report import budget_columns, budget_label

    cols = budget_columns(rows)
    colors = {**METHOD_COLORS, **(colors or {})}
    for k, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = {(r["regime"], r["budget"]): r for r in rows if r["method"] == method}
        xs = [i for i, c in enumerate(cols) if c in pts]
        ax.errorbar(xs, [pts[cols[i]]["mean"] for i in xs], yerr=[pts[cols[i]]["std"] for i in xs], marker="o",
                    ms=4, capsize=3, lw=1.5, label=method, color=colors.get(method, f"C{k}"))
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([budget_label(*c) for c in cols], fontsize=8)
    ax.set_xlabel("label budget")
    metric = rows[0]["metric"] if rows else ""
    ax.set_ylabel({"miou": "test mIoU [%]", "accuracy": "test accuracy [%]"}.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def _pyvista():
    """Import pyvista configured for off-screen rendering (EGL when there is no X display)."""
    global _PV_READY
    if not _PV_READY:
        if not os.environ.get("DISPLAY"):
            os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        import pyvista as pv

        pv.OFF_SCREEN = True
        pv.global_theme.background = "white"
        pv.global_theme.font.color = "black"
        _PV_READY = True
    import pyvista as pv

    return pv


def _colors_for(n, color=None, labels=None, scalars=None, rgb=None, cmap="viridis"):
    if labels is not None:
        return label_colors(labels)
    if rgb is not None:
        c = np.asarray(rgb, dtype=np.float64)
        if c.max() <= 1.0:
            c = c * 255
        return np.clip(c, 0, 255).astype(np.uint8)
    if scalars is not None:
        s = np.asarray(scalars, dtype=np.float64)
        lo, hi = np.nanpercentile(s, 1), np.nanpercentile(s, 99)
        s = np.clip((s - lo) / max(hi - lo, 1e-12), 0, 1)
        return (plt.get_cmap(cmap)(s)[:, :3] * 255).astype(np.uint8)
    c = np.array(matplotlib.colors.to_rgb(color or "#4c72b0")) * 255
    return np.tile(c.astype(np.uint8), (n, 1))


def render_points(points, color=None, labels=None, scalars=None, rgb=None, *, cmap="viridis",
                  point_size: float = 6.0, window_size=(480, 400), camera="iso", zoom: float = 1.0,
                  lines=None, line_color="black", spheres: bool = True, highlight=None,
                  highlight_color="crimson", highlight_size: float = 14.0, path=None) -> np.ndarray:
    """Render a point cloud off-screen and return the picture as an (H, W, 3) uint8 array.

    Colour by one of: ``labels`` (integers → palette), ``scalars`` (colormap), ``rgb`` (N, 3 in [0,1] or
    [0,255]), or a constant ``color``. ``lines``: optional (L, 2, 3) segments drawn on top (e.g.
    correspondences). ``highlight``: optional (M, 3) points drawn as large spheres on top (e.g. FPS samples).
    ``camera``: 'iso', 'xy', 'xz', 'yz' or a pyvista camera position. ``path``: also save.
    """
    from ssl3d.utils import check_points

    pts = np.asarray(check_points(np.asarray(points, dtype=np.float32), batched=False))
    pv = _pyvista()
    pl = pv.Plotter(off_screen=True, window_size=list(window_size))
    cloud = pv.PolyData(pts)
    cloud["rgb"] = _colors_for(len(pts), color, labels, scalars, rgb, cmap)
    pl.add_mesh(cloud, scalars="rgb", rgb=True, point_size=point_size, render_points_as_spheres=spheres)
    if lines is not None:
        seg = np.asarray(lines, dtype=np.float32).reshape(-1, 3)
        if len(seg):
            pl.add_mesh(pv.line_segments_from_points(seg), color=line_color, line_width=1)
    if highlight is not None:
        pl.add_mesh(pv.PolyData(np.asarray(highlight, dtype=np.float32).reshape(-1, 3)), color=highlight_color,
                    point_size=highlight_size, render_points_as_spheres=True)
    _set_camera(pl, camera, zoom)
    img = pl.screenshot(return_img=True)
    pl.close()
    if path is not None:
        save_image(img, path)
    return img


def render_mesh(vertices, faces, color="#c8c8d0", window_size=(480, 400), camera="iso", zoom=1.0,
                show_edges=False, path=None) -> np.ndarray:
    """Render a triangle mesh with lighting; returns an (H, W, 3) uint8 image."""
    pv = _pyvista()
    f = np.asarray(faces, dtype=np.int64)
    mesh = pv.PolyData(np.asarray(vertices, dtype=np.float32), np.hstack([np.full((len(f), 1), 3), f]).ravel())
    pl = pv.Plotter(off_screen=True, window_size=list(window_size))
    pl.add_mesh(mesh, color=color, show_edges=show_edges, smooth_shading=False)
    _set_camera(pl, camera, zoom)
    img = pl.screenshot(return_img=True)
    pl.close()
    if path is not None:
        save_image(img, path)
    return img


def render_voxels(coords, voxel_size: float, color=None, labels=None, scalars=None, rgb=None, *, cmap="viridis",
                  window_size=(480, 400), camera="iso", zoom: float = 1.0, path=None) -> np.ndarray:
    """Render integer voxel coordinates (M, 3) as shaded cubes of side ``voxel_size`` (edges drawn)."""
    pv = _pyvista()
    c = np.asarray(coords, dtype=np.float64)
    centres = (c + 0.5) * voxel_size
    cloud = pv.PolyData(centres)
    cloud["rgb"] = _colors_for(len(c), color, labels, scalars, rgb, cmap)
    cubes = cloud.glyph(geom=pv.Cube(x_length=voxel_size, y_length=voxel_size, z_length=voxel_size),
                        scale=False, orient=False)
    pl = pv.Plotter(off_screen=True, window_size=list(window_size))
    pl.add_mesh(cubes, scalars="rgb", rgb=True, show_edges=True, edge_color="#333333", line_width=0.5)
    _set_camera(pl, camera, zoom)
    img = pl.screenshot(return_img=True)
    pl.close()
    if path is not None:
        save_image(img, path)
    return img


def _set_camera(pl, camera, zoom):
    if camera == "iso":
        pl.view_isometric()
    elif camera in ("xy", "xz", "yz"):
        getattr(pl, f"view_{camera}")()
    elif camera is not None:
        pl.camera_position = camera
    pl.reset_camera()
    if zoom != 1.0:
        pl.camera.zoom(zoom)


def image_grid(images, titles=None, ncols: int | None = None, size: float = 3.2, suptitle=None, name=None):
    """Lay out rendered images (H, W, 3) in a titled matplotlib grid; optionally save as figures/<name>.png."""
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / h, size * nrows + 0.3 * bool(titles)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.ravel()[i]
        ax.imshow(img)
        if titles:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    if name:
        save_figure(fig, name)
    return fig


def show_image(path_or_img, width: int | None = None):
    """Display a saved PNG (or an array) inline in a notebook as PNG."""
    from IPython.display import Image, display

    if isinstance(path_or_img, str | Path):
        display(Image(filename=str(path_or_img), width=width))
    else:
        import io

        buf = io.BytesIO()
        plt.imsave(buf, np.asarray(path_or_img), format="png")
        display(Image(data=buf.getvalue(), width=width))


# ------------------------------------------------------------------------------------------------ cells to play with
# In a live Jupyter frontend these show widgets; when a notebook is executed headless (papermill, nbval, the static
# site) they produce one static frame, so that the executed notebook still shows a figure.

__all__ += ["is_static", "interactive", "show3d"]

_YES, _NO = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def is_static(static: bool | None = None) -> bool:
    """Whether interactive cells should render one static frame instead of live widgets. First rule that applies:

    1. ``static`` given (True/False) → that; tests and callers force a mode this way.
    2. ``$SSL3D_STATIC`` = 1/true/yes/on → static; 0/false/no/off → live (e.g. Voilà, which executes like a batch
       runner but shows widgets). ``ssl3d.reproduce`` and the test suite set ``SSL3D_STATIC=1`` for their kernels.
    3. ipywidgets is not installed → static.
    4. not inside a Jupyter kernel (plain Python, pytest, terminal IPython): no frontend can show a widget → static.
    5. the kernel runs the current cell with stdin disabled → static. Batch executors (papermill and nbclient,
       ``jupyter nbconvert --execute``, nbval) send ``allow_stdin=False``; interactive frontends (JupyterLab,
       Notebook, VS Code) allow stdin, so a live session is recognised even without ``SSL3D_STATIC``.
    6. otherwise → live.
    """
    if static is not None:
        return bool(static)
    env = os.environ.get("SSL3D_STATIC", "").strip().lower()
    if env in _YES:
        return True
    if env in _NO:
        return False
    if env:
        raise ValueError(f"SSL3D_STATIC must be 1 or 0 (or true/false), not {os.environ['SSL3D_STATIC']!r}")
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return True
    return not getattr(kernel, "_allow_stdin", True)  # ipykernel sets it from each execute_request


def _control_default(name, control, fn_default):
    """The value an ipywidgets control starts at (see :func:`interactive`), without creating a widget."""
    import inspect
    from collections.abc import Iterable, Mapping
    from numbers import Integral, Real

    given = fn_default is not inspect.Parameter.empty
    if hasattr(control, "value"):  # a widget, or ipywidgets.fixed
        return control.value
    if isinstance(control, str | bool | Real):
        return control
    if isinstance(control, tuple) and len(control) in (2, 3) and all(isinstance(v, Real) for v in control):
        lo, hi = control[:2]
        if given and isinstance(fn_default, Real):
            return min(max(fn_default, lo), hi)
        if hi < lo:
            raise ValueError(f"interactive: control {name}={control!r} has min > max")
        ints = all(isinstance(v, Integral) for v in control)
        value = lo + (hi - lo) // 2 if ints else lo + (hi - lo) / 2
        if len(control) == 3:
            if control[2] <= 0:
                raise ValueError(f"interactive: control {name}={control!r} needs a positive step")
            value = lo + int((value - lo) / control[2]) * control[2]
        return value
    if isinstance(control, Mapping):
        choices = list(control.values())
    elif isinstance(control, Iterable):
        choices = [c[1] if isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) else c for c in control]
    else:
        raise TypeError(f"interactive: cannot make a control of {name}={control!r}; give a (min, max[, step]) range, "
                        "a list or dict of choices, a bool/str/number, or an ipywidgets widget")
    if not choices:
        raise ValueError(f"interactive: control {name} has no choices")
    return fn_default if given and fn_default in choices else choices[0]


def _shown_once(result):
    """Close a returned matplotlib figure, so that the inline backend does not show it a second time."""
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        plt.close(result)
    return result


def interactive(fn, /, *, static: bool | None = None, **controls):
    """A cell to play with: controls for ``fn``'s arguments in Jupyter, one static frame when run headless.

    ``controls`` are what ``ipywidgets.interact`` takes: ``(min, max[, step])`` → a slider, a list / dict of
    choices → a dropdown, a bool → a checkbox, a str → a text box, a number → a slider around it, or a widget
    (``ipywidgets.IntSlider(...)``, ``ipywidgets.fixed(x)``, ...). ``fn`` draws (``plt.show()``,
    :func:`show_image`) and/or returns something to display (a matplotlib figure, :func:`show3d`'s result, ...).
    Use the call as the last expression of a cell, like ``ipywidgets.interactive``.

    - Live (see :func:`is_static`): returns ``ipywidgets.interactive(fn, **controls)``, the widget; each change of
      a control calls ``fn`` again and shows its output below the controls.
    - Static: calls ``fn`` once, prints one line naming the values used, and returns ``fn``'s result. Each control
      contributes the value its widget would start at: a widget's (or ``fixed``'s) ``.value``; for a range,
      ``fn``'s own default for that argument (clamped to the range) if it has one, else the middle
      ``min + (max - min) / 2`` (integer division for integer ranges) snapped down to the ``step`` grid; for
      choices, ``fn``'s default if it is one of them, else the first (for a dict or ``(label, value)`` pairs its
      value); a single value is itself. Arguments without a control keep ``fn``'s defaults.

    ``static``: True / False forces the mode (tests); None decides with :func:`is_static`. A returned matplotlib
    figure is closed after the call so that it is shown exactly once.
    """
    import functools
    import inspect

    if is_static(static):
        params = inspect.signature(fn).parameters
        unknown = [k for k in controls if k not in params
                   and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())]
        if unknown:
            raise TypeError(f"interactive: {getattr(fn, '__name__', fn)}() has no argument(s) {unknown}; "
                            f"its arguments are {list(params)}")
        empty = inspect.Parameter.empty
        kwargs = {k: _control_default(k, c, params[k].default if k in params else empty) for k, c in controls.items()}
        if kwargs:
            print("static frame with " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
                  + " (run the notebook in Jupyter to move the controls)")
        return _shown_once(fn(**kwargs))
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError("interactive: live mode needs ipywidgets (pip install ipywidgets==8.1.9; it is in "
                          "lib/env/requirements-cpu.txt)") from exc

    @functools.wraps(fn)  # keeps fn's signature, whose defaults ipywidgets reads
    def call(**kwargs):
        return _shown_once(fn(**kwargs))

    return ipywidgets.interactive(call, **controls)


def _trame_viewer_available() -> bool:
    """Whether pyvista's Jupyter backend (trame; optional, see README "Interactive 3D views") can be loaded."""
    import importlib
    import warnings

    for module in ("trame_pyvista.jupyter", "pyvista.trame.jupyter"):  # pyvista >= 0.49, then older pyvista
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(module)
        except Exception:  # ImportError, or a trame stack that fails to load
            continue
        return True
    return False


def show3d(points, colors=None, labels=None, *, static: bool | None = None, point_size: float = 6.0,
           window_size=(480, 400), **kw):
    """Look at a point cloud in 3D: an interactive view in a live Jupyter frontend, a static render elsewhere.

    ``colors``: (N, 3) RGB in [0, 1] or [0, 255], or (N,) scalars mapped through ``cmap``; ``labels``: (N,)
    integers → the shared palette; neither → one colour. Returns something to display (end the cell with it):

    - live (:func:`is_static` is False) and pyvista's Jupyter backend installed (the optional trame packages, see
      README "Interactive 3D views"): pyvista's trame viewer widget — rotate, zoom, pan;
    - otherwise: :func:`render_points`' picture as an ``IPython.display.Image`` (``kw``: its options, e.g.
      ``camera``, ``zoom``, ``cmap``).
    """
    import io

    from IPython.display import Image

    from ssl3d.utils import check_points

    pts = np.asarray(check_points(np.asarray(points, dtype=np.float32), batched=False))
    rgb = scalars = None
    if colors is not None:
        c = np.asarray(colors)
        if c.ndim == 2 and c.shape[1] == 3:
            rgb = c
        elif c.ndim == 1:
            scalars = c
        else:
            raise ValueError(f"show3d: colors must be (N, 3) RGB or (N,) scalars, got shape {c.shape}")
        if len(c) != len(pts):
            raise ValueError(f"show3d: {len(c)} colors for {len(pts)} points")
    if not is_static(static) and _trame_viewer_available():
        pv = _pyvista()
        pl = pv.Plotter(notebook=True, window_size=list(window_size))
        cloud = pv.PolyData(pts)
        cloud["rgb"] = _colors_for(len(pts), kw.get("color"), labels, scalars, rgb, kw.get("cmap", "viridis"))
        pl.add_mesh(cloud, scalars="rgb", rgb=True, point_size=point_size, render_points_as_spheres=True)
        return pl.show(jupyter_backend="trame", return_viewer=True)
    img = render_points(pts, labels=labels, scalars=scalars, rgb=rgb, point_size=point_size,
                        window_size=window_size, **kw)
    buf = io.BytesIO()
    plt.imsave(buf, img, format="png")
    return Image(data=buf.getvalue(), format="png")
