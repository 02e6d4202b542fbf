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
    "label_colors",
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
