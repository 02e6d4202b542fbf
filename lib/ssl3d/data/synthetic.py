"""Procedural 3D data, deterministic given a seed: objects with parts, scanned objects, rooms.

Stand-ins for the real datasets, so that every notebook runs offline:

=====================  ====================================  =======================================
what                   stand-in for                          entry point
=====================  ====================================  =======================================
objects with parts     ModelNet40 / ShapeNetPart             :func:`make_object`, :func:`sample_object`
scanned objects        ScanObjectNN (OBJ_ONLY/OBJ_BG/PB_T50) :func:`scan_object`
rooms                  ScanNet / S3DIS                       :func:`make_room`, :func:`sample_room`
RGB-D scans, pairs     ScanNet frames, PointContrast pairs   :mod:`ssl3d.data.rgbd`
=====================  ====================================  =======================================

Objects are unions of parametric parts (boxes, cylinders, cones, tori, spheres) built in metres, z up, resting
on z = 0. Every class has 2–5 semantic parts and real intra-class variation — proportions, leg counts and
shapes, optional parts — so that simple global statistics do not separate the classes (notebook 01 measures
how far a linear classifier on bounding-box extents and PCA eigenvalues gets).

All randomness flows through a ``numpy.random.Generator``; the same seed gives the same object, room or scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ssl3d import geometry as G

__all__ = [
    "OBJECT_CLASSES",
    "PART_NAMES",
    "PART_RANGES",
    "NUM_PARTS",
    "Mesh",
    "make_object",
    "sample_object",
    "scan_object",
    "hidden_point_removal",
    "ROOM_CLASSES",
    "Room",
    "make_room",
    "sample_room",
    "texture_color",
    "box",
    "quad",
    "cylinder",
]


# ----------------------------------------------------------------------------------------------------------
# Meshes and primitives
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Mesh:
    """A triangle mesh with one integer tag per face (the part id within the object, or a scene id).

    vertices (V, 3) float64, faces (F, 3) int64, tags (F,) int64.
    """

    vertices: np.ndarray
    faces: np.ndarray
    tags: np.ndarray

    @staticmethod
    def concat(meshes: list[Mesh]) -> Mesh:
        verts, faces, tags, off = [], [], [], 0
        for m in meshes:
            verts.append(m.vertices)
            faces.append(m.faces + off)
            tags.append(m.tags)
            off += len(m.vertices)
        return Mesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(tags))

    def transformed(self, rotation=None, translation=None, scale: float = 1.0) -> Mesh:
        v = self.vertices * scale
        if rotation is not None:
            v = v @ np.asarray(rotation, dtype=np.float64).T
        if translation is not None:
            v = v + np.asarray(translation, dtype=np.float64)
        return Mesh(v, self.faces, self.tags)

    def with_tag(self, tag: int) -> Mesh:
        return Mesh(self.vertices, self.faces, np.full(len(self.faces), tag, dtype=np.int64))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(0), self.vertices.max(0)

    def area(self) -> float:
        v = self.vertices
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def _mesh(v, f, tag=0) -> Mesh:
    f = np.asarray(f, dtype=np.int64)
    return Mesh(np.asarray(v, dtype=np.float64), f, np.full(len(f), tag, dtype=np.int64))


def box(center, size, tag=0) -> Mesh:
    """Axis-aligned box with outward-facing triangles."""
    c, s = np.asarray(center, float), np.asarray(size, float) / 2
    corners = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], float) * s + c
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    faces = [t for a, b, cc, d in quads for t in ((a, b, cc), (a, cc, d))]
    return _mesh(corners, faces, tag)


def quad(a, b, c, d, tag=0) -> Mesh:
    """Planar quad a-b-c-d as two triangles; the normal follows the right-hand rule (a→b→c)."""
    return _mesh([a, b, c, d], [(0, 1, 2), (0, 2, 3)], tag)


def _ring_mesh(profile, segments: int, tag=0, closed_bottom=True, closed_top=True) -> Mesh:
    """Surface of revolution about the z-axis; ``profile`` = [(radius, z), ...] from bottom to top."""
    th = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    verts, faces = [], []
    for r, z in profile:
        verts += [(r * math.cos(t), r * math.sin(t), z) for t in th]
    n = segments
    for i in range(len(profile) - 1):
        for j in range(n):
            a, b = i * n + j, i * n + (j + 1) % n
            c, d = a + n, b + n
            faces += [(a, b, d), (a, d, c)]
    if closed_bottom and profile[0][0] > 0:
        verts.append((0, 0, profile[0][1]))
        ci = len(verts) - 1
        faces += [(ci, (j + 1) % n, j) for j in range(n)]
    if closed_top and profile[-1][0] > 0:
        verts.append((0, 0, profile[-1][1]))
        ci, base = len(verts) - 1, (len(profile) - 1) * n
        faces += [(ci, base + j, base + (j + 1) % n) for j in range(n)]
    return _mesh(verts, faces, tag)


def cylinder(center, radius, height, segments=16, tag=0, r_top=None) -> Mesh:
    """Vertical cylinder (or cone frustum with ``r_top``) centred at ``center``."""
    m = _ring_mesh([(radius, -height / 2), (radius if r_top is None else r_top, height / 2)], segments, tag)
    return m.transformed(translation=center)


def rod(p0, p1, radius, segments=10, tag=0) -> Mesh:
    """Cylinder between two points (legs, poles, handles)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.linalg.norm(d))
    m = _ring_mesh([(radius, 0.0), (radius, length)], segments, tag)
    z = np.array([0.0, 0, 1])
    axis = np.cross(z, d / length)
    s, c = np.linalg.norm(axis), float(np.dot(z, d / length))
    if s < 1e-9:
        rot = np.eye(3) if c > 0 else np.diag([1.0, -1, -1])
    else:
        rot = G.rotation_matrix(axis / s, math.atan2(s, c)).double().numpy()
    return m.transformed(rotation=rot, translation=p0)


def sphere(center, radius, segments=16, tag=0, z_scale=1.0) -> Mesh:
    rings = max(4, segments // 2)
    prof = [(radius * math.sin(math.pi * i / rings), -radius * z_scale * math.cos(math.pi * i / rings))
            for i in range(1, rings)]
    m = _ring_mesh(prof, segments, tag)
    # close the poles with fans to the exact poles
    n = segments
    v = np.vstack([m.vertices[:-2], [[0, 0, -radius * z_scale], [0, 0, radius * z_scale]]])
    body = m.faces[:-2 * n]
    lo, hi = len(v) - 2, len(v) - 1
    top0 = (rings - 2) * n
    caps = [(lo, (j + 1) % n, j) for j in range(n)] + [(hi, top0 + j, top0 + (j + 1) % n) for j in range(n)]
    f = np.vstack([body, caps])
    return _mesh(v, f, tag).transformed(translation=center)


def torus_arc(center, R, r, arc=(0.0, 2 * np.pi), seg_major=16, seg_minor=8, tag=0, plane="xz") -> Mesh:
    """(Part of) a torus: tube of radius r around a circle of radius R — mug handles, lamp arms."""
    u = np.linspace(arc[0], arc[1], seg_major + 1)
    w = np.linspace(0, 2 * np.pi, seg_minor, endpoint=False)
    uu, ww = np.meshgrid(u, w, indexing="ij")
    a = (R + r * np.cos(ww)) * np.cos(uu)
    b = (R + r * np.cos(ww)) * np.sin(uu)
    c = r * np.sin(ww)
    xyz = {"xy": (a, b, c), "xz": (a, c, b), "yz": (c, a, b)}[plane]
    verts = np.stack([x.ravel() for x in xyz], 1)
    faces = []
    for i in range(seg_major):
        for j in range(seg_minor):
            p, q = i * seg_minor + j, i * seg_minor + (j + 1) % seg_minor
            faces += [(p, p + seg_minor, q + seg_minor), (p, q + seg_minor, q)]
    return _mesh(verts, faces, tag).transformed(translation=center)


# ----------------------------------------------------------------------------------------------------------
# Object classes. Each builder returns a Mesh in metres, z up, resting on z = 0, tags = local part ids.
# ----------------------------------------------------------------------------------------------------------
def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _legs(rng, xs, ys, top_z, radius, tag, square=None):
    """Four legs at the corners of an (xs × ys) rectangle, round or square (random unless given)."""
    square = bool(rng.random() < 0.5) if square is None else square
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            c = (sx * xs / 2, sy * ys / 2)
            if square:
                out.append(box((c[0], c[1], top_z / 2), (2 * radius, 2 * radius, top_z), tag))
            else:
                out.append(cylinder((c[0], c[1], top_z / 2), radius, top_z, 8, tag))
    return out


def _chair(rng):  # parts: 0 seat, 1 back, 2 legs, 3 arms (optional)
    w, d, h = _u(rng, 0.4, 0.55), _u(rng, 0.4, 0.55), _u(rng, 0.4, 0.5)
    t = _u(rng, 0.03, 0.07)
    back_h = _u(rng, 0.3, 0.6)
    parts = [box((0, 0, h + t / 2), (w, d, t), 0)]
    tilt_d = _u(rng, 0.02, 0.06)
    parts.append(box((0, -d / 2 + tilt_d / 2, h + t + back_h / 2), (w, tilt_d, back_h), 1))
    parts += _legs(rng, w * 0.85, d * 0.85, h, _u(rng, 0.015, 0.03), 2)
    if rng.random() < 0.4:
        for s in (-1, 1):
            parts.append(box((s * w / 2, 0, h + t + 0.12), (0.04, d * 0.8, 0.04), 3))
            parts.append(box((s * w / 2, d * 0.3, h + t + 0.06), (0.03, 0.03, 0.12), 3))
    return parts


def _table(rng):  # 0 top, 1 legs, 2 shelf (optional)
    round_top = rng.random() < 0.35
    w, d, h = _u(rng, 0.8, 1.6), _u(rng, 0.6, 1.0), _u(rng, 0.65, 0.8)
    t = _u(rng, 0.03, 0.06)
    parts = []
    if round_top:
        r = _u(rng, 0.4, 0.65)
        parts.append(cylinder((0, 0, h + t / 2), r, t, 24, 0))
        if rng.random() < 0.5:
            parts.append(cylinder((0, 0, h / 2), _u(rng, 0.04, 0.08), h, 12, 1))
            parts.append(cylinder((0, 0, 0.02), r * 0.5, 0.04, 16, 1))
        else:
            parts += _legs(rng, r * 1.1, r * 1.1, h, 0.025, 1)
    else:
        parts.append(box((0, 0, h + t / 2), (w, d, t), 0))
        parts += _legs(rng, w * 0.9, d * 0.85, h, _u(rng, 0.02, 0.04), 1)
        if rng.random() < 0.4:
            parts.append(box((0, 0, h * 0.25), (w * 0.85, d * 0.8, 0.02), 2))
    return parts


def _lamp(rng):  # 0 base, 1 pole, 2 shade
    h = _u(rng, 0.4, 1.7)
    rb = _u(rng, 0.08, 0.18)
    parts = [cylinder((0, 0, 0.015), rb, 0.03, 16, 0)]
    arm = rng.random() < 0.35
    if arm:
        parts.append(rod((0, 0, 0.03), (0, 0, h * 0.8), 0.012, tag=1))
        parts.append(rod((0, 0, h * 0.8), (h * 0.25, 0, h), 0.012, tag=1))
        top = (h * 0.25, 0, h)
    else:
        parts.append(cylinder((0, 0, h / 2), 0.012, h, 8, 1))
        top = (0, 0, h)
    rs = _u(rng, 0.1, 0.25)
    sh = _u(rng, 0.12, 0.3)
    parts.append(cylinder((top[0], top[1], top[2] - sh / 3), rs, sh, 20, 2, r_top=rs * _u(rng, 0.4, 0.9)))
    return parts


def _mug(rng):  # 0 body, 1 handle
    r, h = _u(rng, 0.035, 0.06), _u(rng, 0.08, 0.13)
    taper = _u(rng, 0.8, 1.15)
    parts = [cylinder((0, 0, h / 2), r, h, 20, 0, r_top=r * taper)]
    hr = h * _u(rng, 0.25, 0.38)
    parts.append(torus_arc((r + hr * 0.6, 0, h * 0.5), hr, 0.007, (-np.pi / 2, np.pi / 2), 10, 6, 1, "xz"))
    return parts


def _bottle(rng):  # 0 body, 1 neck, 2 cap
    r, hb = _u(rng, 0.03, 0.06), _u(rng, 0.12, 0.25)
    rn, hn = r * _u(rng, 0.3, 0.5), _u(rng, 0.04, 0.1)
    sh = _u(rng, 0.02, 0.05)
    body = _ring_mesh([(r, 0.0), (r, hb), (rn, hb + sh)], 20, 0, closed_top=False)
    neck = cylinder((0, 0, hb + sh + hn / 2), rn, hn, 12, 1)
    cap = cylinder((0, 0, hb + sh + hn + 0.01), rn * 1.15, 0.02, 12, 2)
    return [body, neck, cap]


def _airplane(rng):  # 0 fuselage, 1 wings, 2 tail, 3 engines (optional)
    L, r = _u(rng, 2.5, 4.0), _u(rng, 0.15, 0.3)
    fus = rod((-L / 2, 0, 0), (L / 2, 0, 0), r, 14, 0)
    nose = sphere((L / 2, 0, 0), r, 12, 0)
    span, chord = _u(rng, 2.0, 4.0), _u(rng, 0.35, 0.7)
    sweep = _u(rng, -0.3, 0.3)
    wings = [box((sweep, s * span / 4, 0), (chord, span / 2, 0.04), 1) for s in (-1, 1)]
    tail_s = _u(rng, 0.5, 1.0)
    tail = [box((-L / 2 + 0.2, 0, r + tail_s * 0.3), (0.4, 0.04, tail_s * 0.6), 2),
            box((-L / 2 + 0.2, 0, 0.05), (0.3, tail_s * 1.2, 0.03), 2)]
    parts = [fus, nose, *wings, *tail]
    if rng.random() < 0.6:
        for s in (-1, 1):
            parts.append(rod((sweep - 0.3, s * span / 5, -0.15), (sweep + 0.2, s * span / 5, -0.15), 0.09, 10, 3))
    return [p.transformed(translation=(0, 0, r + 0.3)) for p in parts]


def _car(rng):  # 0 body, 1 cabin, 2 wheels
    L, W, H = _u(rng, 3.5, 4.8), _u(rng, 1.6, 1.9), _u(rng, 0.45, 0.7)
    wr = _u(rng, 0.28, 0.38)
    body = box((0, 0, wr + H / 2), (L, W, H), 0)
    cl = L * _u(rng, 0.4, 0.65)
    cabin = box((_u(rng, -0.4, 0.2), 0, wr + H + 0.25), (cl, W * 0.85, 0.5), 1)
    wheels = [torus_arc((sx * L * 0.33, sy * W / 2, wr), wr * 0.7, wr * 0.3, (0, 2 * np.pi), 14, 6, 2, "xz")
              for sx in (-1, 1) for sy in (-1, 1)]
    return [body, cabin, *wheels]


def _bed(rng):  # 0 frame, 1 mattress, 2 headboard, 3 pillow (optional)
    L, W = _u(rng, 1.9, 2.2), _u(rng, 0.9, 1.8)
    hf = _u(rng, 0.2, 0.35)
    parts = [box((0, 0, hf / 2), (L, W, hf), 0), box((0, 0, hf + 0.1), (L * 0.97, W * 0.95, 0.2), 1)]
    hh = _u(rng, 0.5, 1.1)
    parts.append(box((-L / 2 - 0.03, 0, hh / 2), (0.06, W, hh), 2))
    if rng.random() < 0.7:
        n = 1 if W < 1.3 else 2
        for i in range(n):
            y = 0 if n == 1 else (i - 0.5) * W / 2
            parts.append(box((-L / 2 + 0.3, y, hf + 0.25), (0.35, min(0.6, W / n * 0.8), 0.1), 3))
    return parts


def _shelf(rng):  # 0 sides, 1 boards, 2 back (optional)
    W, D, H = _u(rng, 0.6, 1.4), _u(rng, 0.25, 0.45), _u(rng, 0.8, 2.0)
    t = 0.02
    parts = [box((s * (W / 2 - t / 2), 0, H / 2), (t, D, H), 0) for s in (-1, 1)]
    nb = int(rng.integers(2, 6))
    for i in range(nb):
        z = t / 2 + i * (H - t) / (nb - 1)
        parts.append(box((0, 0, z), (W - 2 * t, D, t), 1))
    if rng.random() < 0.6:
        parts.append(box((0, -D / 2 + 0.005, H / 2), (W, 0.01, H), 2))
    return parts


def _sofa(rng):  # 0 seat, 1 back, 2 arms
    W, D = _u(rng, 1.4, 2.4), _u(rng, 0.8, 1.0)
    hs = _u(rng, 0.35, 0.48)
    parts = [box((0, 0, hs / 2), (W, D, hs), 0)]
    hb = _u(rng, 0.3, 0.5)
    parts.append(box((0, -D / 2 + 0.1, hs + hb / 2), (W, 0.2, hb), 1))
    ha = _u(rng, 0.1, 0.25)
    if rng.random() < 0.85:
        parts += [box((s * (W / 2 - 0.1), 0.05, hs + ha / 2), (0.2, D * 0.9, ha), 2) for s in (-1, 1)]
    return parts


def _bench(rng):  # 0 seat, 1 legs, 2 back (optional)
    W, D, h = _u(rng, 1.0, 2.0), _u(rng, 0.3, 0.45), _u(rng, 0.4, 0.5)
    parts = [box((0, 0, h), (W, D, 0.04), 0)]
    if rng.random() < 0.5:
        parts += [box((s * W * 0.4, 0, h / 2), (0.05, D * 0.9, h), 1) for s in (-1, 1)]
    else:
        parts += _legs(rng, W * 0.9, D * 0.8, h, 0.025, 1)
    if rng.random() < 0.5:
        parts.append(box((0, -D / 2, h + 0.25), (W, 0.03, 0.3), 2))
    return parts


def _monitor(rng):  # 0 screen, 1 neck, 2 base
    W = _u(rng, 0.4, 0.75)
    Hs = W * _u(rng, 0.5, 0.7)
    neck = _u(rng, 0.08, 0.2)
    parts = [box((0, 0, neck + Hs / 2), (W, _u(rng, 0.02, 0.06), Hs), 0)]
    parts.append(box((0, -0.02, neck / 2 + 0.01), (0.05, 0.03, neck), 1))
    if rng.random() < 0.5:
        parts.append(box((0, 0, 0.01), (W * 0.4, 0.2, 0.02), 2))
    else:
        parts.append(cylinder((0, 0, 0.01), 0.11, 0.02, 16, 2))
    return parts


def _stool(rng):  # 0 seat, 1 legs, 2 footrest (optional)
    h = _u(rng, 0.45, 0.8)
    r = _u(rng, 0.15, 0.22)
    parts = [cylinder((0, 0, h), r, 0.04, 16, 0) if rng.random() < 0.6 else box((0, 0, h), (2 * r, 2 * r, 0.04), 0)]
    n = int(rng.integers(3, 5))
    for i in range(n):
        a = 2 * np.pi * i / n
        parts.append(rod((1.3 * r * math.cos(a), 1.3 * r * math.sin(a), 0), (0.7 * r * math.cos(a),
                                                                             0.7 * r * math.sin(a), h), 0.015, 8, 1))
    if rng.random() < 0.5:
        parts.append(torus_arc((0, 0, h * 0.35), r * 1.05, 0.01, (0, 2 * np.pi), 16, 6, 2, "xy"))
    return parts


def _cabinet(rng):  # 0 body, 1 doors/drawers, 2 handles
    W, D, H = _u(rng, 0.4, 1.2), _u(rng, 0.35, 0.6), _u(rng, 0.5, 1.6)
    parts = [box((0, 0, H / 2), (W, D, H), 0)]
    n = int(rng.integers(1, 5))
    for i in range(n):
        z = H * (i + 0.5) / n
        parts.append(box((0, D / 2 + 0.005, z), (W * 0.92, 0.01, H / n * 0.9), 1))
        parts.append(box((0, D / 2 + 0.02, z + H / n * 0.25), (min(0.12, W * 0.3), 0.02, 0.02), 2))
    return parts


_BUILDERS = {
    "chair": (_chair, ["seat", "back", "leg", "arm"]),
    "table": (_table, ["top", "leg", "shelf"]),
    "lamp": (_lamp, ["base", "pole", "shade"]),
    "mug": (_mug, ["body", "handle"]),
    "bottle": (_bottle, ["body", "neck", "cap"]),
    "airplane": (_airplane, ["fuselage", "wing", "tail", "engine"]),
    "car": (_car, ["body", "cabin", "wheel"]),
    "bed": (_bed, ["frame", "mattress", "headboard", "pillow"]),
    "shelf": (_shelf, ["side", "board", "back"]),
    "sofa": (_sofa, ["seat", "back", "arm"]),
    "bench": (_bench, ["seat", "leg", "back"]),
    "monitor": (_monitor, ["screen", "neck", "base"]),
    "stool": (_stool, ["seat", "leg", "footrest"]),
    "cabinet": (_cabinet, ["body", "door", "handle"]),
}
OBJECT_CLASSES: list[str] = list(_BUILDERS)
#: global part ids: class c owns ids PART_RANGES[c] (like ShapeNetPart's 50 parts over 16 categories)
PART_NAMES: list[str] = [f"{c}/{p}" for c in OBJECT_CLASSES for p in _BUILDERS[c][1]]
PART_RANGES: list[range] = []
_o = 0
for _c in OBJECT_CLASSES:
    PART_RANGES.append(range(_o, _o + len(_BUILDERS[_c][1])))
    _o += len(_BUILDERS[_c][1])
NUM_PARTS: int = _o
del _o, _c


def _class_index(cls) -> int:
    if isinstance(cls, int | np.integer):
        if not 0 <= cls < len(OBJECT_CLASSES):
            raise ValueError(f"object class index {cls} out of range 0..{len(OBJECT_CLASSES) - 1}")
        return int(cls)
    if cls not in _BUILDERS:
        raise ValueError(f"unknown object class '{cls}'; choose from {OBJECT_CLASSES}")
    return OBJECT_CLASSES.index(cls)


def make_object(cls, rng: np.random.Generator | int, stretch: float = 0.3) -> Mesh:
    """Build one random instance of an object class as a mesh in metres (z up, on z = 0).

    ``tags`` hold GLOBAL part ids (``PART_RANGES[class]``). ``rng``: a numpy Generator or an int seed.
    ``stretch``: on top of each class's own part-level variation, every axis is scaled by exp(U(−s, s)), so that
    classes overlap in overall proportions (a bench can be as deep as a narrow table) — without it a linear
    classifier on bounding-box extents alone separates most classes.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    c = _class_index(cls)
    builder, _ = _BUILDERS[OBJECT_CLASSES[c]]
    mesh = Mesh.concat(builder(rng))
    if stretch > 0:
        mesh.vertices = mesh.vertices * np.exp(rng.uniform(-stretch, stretch, size=3))
    mesh.tags = mesh.tags + PART_RANGES[c].start
    lo, hi = mesh.bounds()
    return mesh.transformed(translation=(-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]))


def sample_object(cls, n_points: int = 1024, seed: int = 0, normalize: bool = True, random_yaw: bool = False,
                  stretch: float = 0.3):
    """An object point cloud: area-weighted surface samples with normals and part labels.

    Returns a dict with ``points (N, 3) float32`` (in the unit sphere when ``normalize``), ``normals (N, 3)``,
    ``part (N,) int64`` (global part ids), ``label`` (class index), ``mesh`` (the source :class:`Mesh`,
    transformed like the points).
    """
    rng = np.random.default_rng(seed)
    c = _class_index(cls)
    mesh = make_object(c, rng, stretch=stretch)
    if random_yaw:
        rot = G.rotation_matrix((0, 0, 1), float(rng.uniform(0, 2 * np.pi))).double().numpy()
        mesh = mesh.transformed(rotation=rot)
    if normalize:  # the mesh, not the samples, goes into the unit sphere (bounding-box centre)
        _, centre, scale = G.normalize_unit_sphere(mesh.vertices, center="bbox")
        mesh = mesh.transformed(translation=-centre / scale, scale=1 / scale)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    pts, nrm, face = G.sample_surface(mesh.vertices, mesh.faces, n_points, generator=gen)
    return {"points": pts.numpy(), "normals": nrm.numpy(), "part": mesh.tags[face.numpy()], "label": c,
            "mesh": mesh}


# ----------------------------------------------------------------------------------------------------------
# Scanned objects (ScanObjectNN-like)
# ----------------------------------------------------------------------------------------------------------
def hidden_point_removal(points: np.ndarray, camera: np.ndarray, gamma: float = 3.0) -> np.ndarray:
    """Indices of the points visible from ``camera`` (Katz, Tal & Basri, SIGGRAPH 2007).

    Spherical flipping p ↦ p + 2(R − ‖p‖) p/‖p‖ about the camera, with R = ‖p‖_max · 10^γ, then the points on the
    convex hull of the flipped cloud ∪ {camera} are the visible ones. Larger γ keeps more points.
    """
    from scipy.spatial import ConvexHull

    p = points - camera
    norm = np.linalg.norm(p, axis=1, keepdims=True).clip(1e-12)
    radius = norm.max() * (10**gamma)
    flipped = p + 2 * (radius - norm) * p / norm
    hull = ConvexHull(np.vstack([flipped, np.zeros((1, 3))]))
    vis = hull.vertices[hull.vertices < len(points)]
    return np.sort(vis)


def scan_object(cls, n_points: int = 1024, seed: int = 0, variant: str = "OBJ_ONLY", noise: float = 0.005,
                dense: int = 8192):
    """A single-view scan of a synthetic object, like ScanObjectNN.

    The object (metric size) is sampled densely, only the points visible from a random camera (hidden point
    removal) are kept, Gaussian sensor noise is added, and the result is resampled to ``n_points``.

    variant:
        ``OBJ_ONLY``  the object alone;
        ``OBJ_BG``    plus background: a floor patch and clutter boxes around it, also seen from the camera
                      (``part`` = −1 on background points, ``mask`` False);
        ``PB_T50_RS`` OBJ_BG, then the object's box is perturbed: translation up to 50 % of its size, random
                      rotation about the up axis and scaling in [0.75, 1.25] — the hardest variant.
    Returns the same dict as :func:`sample_object` plus ``mask (N,) bool`` (object points) and ``camera``.
    """
    if variant not in ("OBJ_ONLY", "OBJ_BG", "PB_T50_RS"):
        raise ValueError(f"variant must be OBJ_ONLY, OBJ_BG or PB_T50_RS, got {variant!r}")
    rng = np.random.default_rng(seed)
    c = _class_index(cls)
    mesh = make_object(c, rng)
    lo, hi = mesh.bounds()
    size = float(np.linalg.norm(hi - lo))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    pts, nrm, face = (t.numpy() for t in G.sample_surface(mesh.vertices, mesh.faces, dense, generator=gen))
    part = mesh.tags[face]
    if variant != "OBJ_ONLY":
        # floor patch and 2–4 clutter boxes around the object
        clutter = [box(((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, -0.005), (size * 1.6, size * 1.6, 0.01))]
        for _ in range(int(rng.integers(2, 5))):
            a = rng.uniform(0, 2 * np.pi)
            d = size * rng.uniform(0.6, 0.9)
            s = size * rng.uniform(0.1, 0.3, size=3)
            clutter.append(box((d * math.cos(a), d * math.sin(a), s[2] / 2), s))
        cm = Mesh.concat(clutter)
        nb = dense // 2
        bp, bn, _ = (t.numpy() for t in G.sample_surface(cm.vertices, cm.faces, nb, generator=gen))
        pts, nrm = np.vstack([pts, bp]), np.vstack([nrm, bn])
        part = np.concatenate([part, np.full(nb, -1)])
    # camera on a sphere around the object, above the floor
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.9)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2])
    cam = centre + 1.5 * size * np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    vis = hidden_point_removal(pts, cam)
    pts, nrm, part = pts[vis], nrm[vis], part[vis]
    if variant == "PB_T50_RS":
        obj = part >= 0
        rot = G.rotation_matrix((0, 0, 1), float(rng.uniform(0, 2 * np.pi))).double().numpy()
        s = rng.uniform(0.75, 1.25)
        t = rng.uniform(-0.5, 0.5, size=3) * (hi - lo) * np.array([1, 1, 0])
        pts = pts.copy()
        pts[obj] = ((pts[obj] - centre) @ rot.T) * s + centre + t
        nrm = nrm.copy()
        nrm[obj] = nrm[obj] @ rot.T
        # crop the background to the (perturbed) object's neighbourhood, like ScanObjectNN's bounding boxes
        keep = np.linalg.norm(pts[:, :2] - (centre[:2] + t[:2]), axis=1) < size * 0.9
        pts, nrm, part = pts[keep], nrm[keep], part[keep]
    pts = pts + rng.normal(0, noise * size, pts.shape)
    choice = rng.choice(len(pts), n_points, replace=len(pts) < n_points)
    pts, nrm, part = pts[choice], nrm[choice], part[choice]
    # normalise to the unit sphere around the object's points (as ScanObjectNN's h5 files are)
    obj_pts = pts[part >= 0] if (part >= 0).any() else pts
    ctr = (obj_pts.max(0) + obj_pts.min(0)) / 2
    scale = np.linalg.norm(pts - ctr, axis=1).max()
    pts = (pts - ctr) / scale
    return {"points": pts.astype(np.float32), "normals": nrm.astype(np.float32), "part": part.astype(np.int64),
            "mask": part >= 0, "label": c, "camera": ((cam - ctr) / scale).astype(np.float32)}


# ----------------------------------------------------------------------------------------------------------
# Procedural textures (evaluated at 3D positions, so point colours and rendered pixels agree)
# ----------------------------------------------------------------------------------------------------------
def texture_color(xyz: np.ndarray, base: np.ndarray, kind: int, scale: float) -> np.ndarray:
    """Colour (N, 3) in [0, 1] of a procedural texture at 3D positions ``xyz`` (N, 3).

    kind 0: plain with faint noise, 1: stripes (wood-like grain), 2: checker (tiles), 3: sinusoidal blotches.
    """
    x = np.asarray(xyz, dtype=np.float64) / max(scale, 1e-6)
    if kind == 1:
        f = 0.5 + 0.5 * np.sin(2 * np.pi * (x[:, 0] + 0.3 * np.sin(2 * np.pi * x[:, 1])) * 2.0)
        m = 0.75 + 0.35 * f
    elif kind == 2:
        f = (np.floor(x[:, 0] * 2 + 0.25) + np.floor(x[:, 1] * 2 + 0.25) + np.floor(x[:, 2] * 2 + 0.25)) % 2
        m = 0.7 + 0.45 * f
    elif kind == 3:
        f = np.sin(3 * x[:, 0]) * np.sin(3 * x[:, 1] + 1.3) * np.sin(3 * x[:, 2] + 0.7)
        m = 0.85 + 0.3 * f
    else:
        m = 0.96 + 0.04 * np.sin(5 * x[:, 0] + 3 * x[:, 1] + 2 * x[:, 2])
    return np.clip(base[None, :] * m[:, None], 0, 1)


# ----------------------------------------------------------------------------------------------------------
# Rooms (ScanNet / S3DIS-like)
# ----------------------------------------------------------------------------------------------------------
#: semantic classes of the rooms; furniture classes reuse the object builders
ROOM_FURNITURE = ["chair", "table", "sofa", "bed", "shelf", "lamp", "bench", "cabinet", "stool"]
ROOM_CLASSES: list[str] = ["floor", "wall", "ceiling", *ROOM_FURNITURE]


@dataclass
class Room:
    """A furnished room. ``mesh.tags`` hold *instance* ids; ``instance_semantic[i]`` is instance i's class.

    Instances 0, 1, 2 are the floor, the walls and the ceiling. Each instance has a base colour and a
    procedural texture (:func:`texture_color`); ``size`` = (x, y, z) extent in metres, the room spans
    [0, size] with the floor at z = 0.
    """

    mesh: Mesh
    instance_semantic: np.ndarray  # (I,) int64
    instance_color: np.ndarray  # (I, 3) float in [0, 1]
    instance_texture: np.ndarray  # (I,) int64 texture kind
    size: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def num_instances(self) -> int:
        return len(self.instance_semantic)

    def face_semantic(self) -> np.ndarray:
        return self.instance_semantic[self.mesh.tags]

    def colors_at(self, xyz: np.ndarray, instance: np.ndarray) -> np.ndarray:
        """Textured colour (N, 3) at 3D points ``xyz`` lying on instances ``instance`` (N,)."""
        out = np.zeros((len(xyz), 3))
        for i in np.unique(instance):
            sel = instance == i
            out[sel] = texture_color(xyz[sel], self.instance_color[i], int(self.instance_texture[i]), 0.25)
        return out


_FURNITURE_COLORS = np.array([
    [0.55, 0.35, 0.2], [0.8, 0.7, 0.5], [0.3, 0.45, 0.7], [0.7, 0.3, 0.3], [0.45, 0.6, 0.35], [0.9, 0.85, 0.4],
    [0.5, 0.5, 0.55], [0.65, 0.5, 0.75], [0.35, 0.65, 0.65], [0.85, 0.55, 0.3]])


def make_room(seed: int = 0, n_objects: tuple[int, int] = (4, 12), size_range=((4.0, 8.0), (4.0, 8.0)),
              height_range=(2.5, 3.0), max_tries: int = 200) -> Room:
    """A rectangular room (floor, four walls, ceiling) with 4–12 furniture objects placed without overlap.

    Objects get a random yaw (multiples of 90° plus jitter ≤ 10°) and are placed by rejection sampling of
    their footprint (the axis-aligned box of the rotated object, with a 5 cm margin) inside the room.
    """
    rng = np.random.default_rng(seed)
    sx, sy = rng.uniform(*size_range[0]), rng.uniform(*size_range[1])
    sz = rng.uniform(*height_range)
    # the shell is single-sided, facing inwards, like a real scan of a room's interior
    shell = [
        quad((0, 0, 0), (sx, 0, 0), (sx, sy, 0), (0, sy, 0)).with_tag(0),
        Mesh.concat([quad((0, 0, 0), (0, 0, sz), (sx, 0, sz), (sx, 0, 0)),
                     quad((sx, 0, 0), (sx, 0, sz), (sx, sy, sz), (sx, sy, 0)),
                     quad((sx, sy, 0), (sx, sy, sz), (0, sy, sz), (0, sy, 0)),
                     quad((0, sy, 0), (0, sy, sz), (0, 0, sz), (0, 0, 0))]).with_tag(1),
        quad((0, 0, sz), (0, sy, sz), (sx, sy, sz), (sx, 0, sz)).with_tag(2),
    ]
    sem = [0, 1, 2]
    colors = [np.array([0.6, 0.55, 0.5]) * rng.uniform(0.8, 1.1), np.array([0.88, 0.86, 0.8]) * rng.uniform(0.85, 1),
              np.array([0.95, 0.95, 0.95])]
    textures = [int(rng.choice([1, 2])), 0, 0]
    meshes = list(shell)
    placed: list[tuple[float, float, float, float]] = []
    n_target = int(rng.integers(n_objects[0], n_objects[1] + 1))
    tries = 0
    while len(placed) < n_target and tries < max_tries:
        tries += 1
        cname = ROOM_FURNITURE[int(rng.integers(len(ROOM_FURNITURE)))]
        obj = make_object(cname, rng)
        yaw = rng.integers(4) * np.pi / 2 + rng.uniform(-0.17, 0.17)
        rot = G.rotation_matrix((0, 0, 1), float(yaw)).double().numpy()
        obj = obj.transformed(rotation=rot)
        lo, hi = obj.bounds()
        if hi[2] > sz - 0.1 or hi[0] - lo[0] > sx - 0.3 or hi[1] - lo[1] > sy - 0.3:
            continue
        # against a wall (beds, shelves, sofas, cabinets) or anywhere
        cx = rng.uniform(0.1 - lo[0], sx - 0.1 - hi[0])
        cy = rng.uniform(0.1 - lo[1], sy - 0.1 - hi[1])
        rect = (cx + lo[0] - 0.05, cy + lo[1] - 0.05, cx + hi[0] + 0.05, cy + hi[1] + 0.05)
        if any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
            continue
        placed.append(rect)
        inst = len(sem)
        meshes.append(obj.transformed(translation=(cx, cy, 0)).with_tag(inst))
        sem.append(ROOM_CLASSES.index(cname))
        colors.append(_FURNITURE_COLORS[int(rng.integers(len(_FURNITURE_COLORS)))] * rng.uniform(0.8, 1.15))
        textures.append(int(rng.integers(4)))
    return Room(Mesh.concat(meshes), np.array(sem, np.int64), np.clip(np.array(colors), 0, 1),
                np.array(textures, np.int64), size=np.array([sx, sy, sz]))


def sample_room(room: Room, n_points: int = 100_000, seed: int = 0, ceiling: bool = False):
    """Area-weighted surface samples of a room: points, colours (textured), normals, semantic, instance.

    ``ceiling=False`` drops the ceiling (as most figures and the S3DIS-style crops do not need it).
    """
    mesh = room.mesh
    if not ceiling:
        keep = mesh.tags != 2
        mesh = Mesh(mesh.vertices, mesh.faces[keep], mesh.tags[keep])
    gen = torch.Generator().manual_seed(seed)
    pts, nrm, face = (t.numpy() for t in G.sample_surface(mesh.vertices, mesh.faces, n_points, generator=gen))
    inst = mesh.tags[face]
    return {"points": pts.astype(np.float32), "normals": nrm.astype(np.float32),
            "colors": room.colors_at(pts, inst).astype(np.float32),
            "semantic": room.instance_semantic[inst], "instance": inst.astype(np.int64)}
