"""File formats of the real datasets, parsed here with numpy only (no ``plyfile``, no ``pandas``).

    read_ply      PLY, ascii and binary (little/big endian), any scalar and list properties
    read_off      OFF meshes, including ModelNet's fused ``OFF1234 5678 0`` header
    read_h5       whole datasets of an HDF5 file (PointNet / ScanObjectNN archives)
    read_table    whitespace-separated numeric text (ShapeNetPart, S3DIS), optionally repairing S3DIS's stray bytes
    read_matrix   a small whitespace-separated matrix (ScanNet poses and intrinsics)

Every parser raises :class:`CorruptFileError` naming the file when the file exists but cannot be read (truncated,
wrong format, wrong number of columns). The dataset readers built on these parsers live in
:mod:`ssl3d.data.real`, which re-exports :func:`read_ply`, :func:`read_off` and :class:`CorruptFileError`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "CorruptFileError",
    "read_ply",
    "read_off",
    "read_h5",
    "read_table",
    "read_matrix",
]


# ----------------------------------------------------------------------------------------------------------
# Error
# ----------------------------------------------------------------------------------------------------------
class CorruptFileError(ValueError):
    """A file of the dataset exists but cannot be read (truncated, wrong format, wrong number of columns).

    ``path`` is the offending file; the message starts with it.
    """

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # keep the two-argument constructor picklable (DataLoader workers re-raise errors)
        return type(self), (self.path, self.problem)


# ----------------------------------------------------------------------------------------------------------
# HDF5, numeric text tables, matrices
# ----------------------------------------------------------------------------------------------------------
def read_h5(path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read whole datasets from an HDF5 file; a truncated/corrupt file or a missing key names the file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in required if k not in f]
            if missing:
                raise CorruptFileError(path, f"has no dataset {missing} (it holds {sorted(f.keys())}); "
                                             f"is it the right file?")
            return {k: f[k][()] for k in (*required, *(k for k in optional if k in f))}
    except CorruptFileError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise CorruptFileError(path, f"cannot be read as HDF5 ({e}); the file is truncated or corrupt — "
                                     f"extract it again from the archive") from e


# What bytes.split() splits on. A byte below 0x20 that is not one of these is, in the S3DIS text files, a printable
# character that lost its 0x20 bit (see read_table); _RESTORE_BIT5 maps it back, e.g. \x00 → " ", \x10 → "0".
_WHITESPACE = b" \t\n\v\f\r"
_BIT5_LOST = bytes(b for b in range(0x20) if b not in _WHITESPACE)
_RESTORE_BIT5 = bytes.maketrans(_BIT5_LOST, bytes(b | 0x20 for b in _BIT5_LOST))
_STRAY = re.compile(b"[" + re.escape(_BIT5_LOST) + b"]")


def read_table(path, ncols: int, columns: str, tolerant: bool = False) -> np.ndarray:
    r"""Read a whitespace-separated numeric text file with exactly ``ncols`` values per line → (N, ncols) float64.

    Blank lines are skipped; values are separated by ASCII whitespace (space, tab, CR, LF, VT, FF). A line that
    is not numeric, or has another number of values, raises :class:`CorruptFileError` with its line number.

    ``tolerant=True`` (used for S3DIS) first repairs a line that does not parse by restoring one bit. Every
    stray byte known in the S3DIS releases is a printable character whose 0x20 bit was cleared — one bit
    flipped in the archive, the character replaced (not inserted, the line keeps its length):

    - ``Area_5/hallway_6/Annotations/ceiling_1.txt`` of the Aligned version (the standard test area), line
      180389: ``22.350 6.692 3.048 185\x00187 182``. ``\x00`` is ``" "`` (0x20) without that bit → the values
      ``185 187 182`` (charlesq34/pointnet#45, HuguesTHOMAS/KPConv#82; the bytes are those of
      loicland/superpoint_graph's ``S3DIS_fix.diff``).
    - ``Area_5/office_19/Annotations/ceiling_1.txt`` of the non-aligned v1.2, line 323474, 6th column:
      ``103.0\x100000``. ``\x10`` is ``"0"`` (0x30) without it → ``103.000000`` (Pointcept's README,
      zeliu98/CloserLook3D#15).
    - ``Area_3/hallway_2/hallway_2.txt`` of the Aligned version, line 926337: ``19.302 -9.1\x160 1.785 ...``.
      ``\x16`` is ``"6"`` (0x36) without it → ``-9.160`` (the same ``S3DIS_fix.diff``; a whole-room file,
      which :func:`ssl3d.data.real.read_s3dis_room` does not read).

    So what tells the NUL *between* two numbers (a separator) from the ``\x10`` *inside* a number is not where
    the byte sits but which character it stands for: each byte 0x00–0x1F other than the whitespace above is
    read as ``chr(byte | 0x20)`` — ``\x00`` → space, ``\x0e`` → ``.``, ``\x10``–``\x19`` → ``0``–``9``. The
    restored values agree with the neighbouring lines (``-9.160`` among ``-9.160``/``-9.161``) and with the
    corrections the dataset's users published (``185 187``, ``103.000000``); deleting the byte instead would
    have merged ``185187`` into one value and turned ``-9.160`` into ``-9.10``. A warning names the file and
    the repaired lines. A line that is still not numeric, or has the wrong number of values after the repair,
    raises :class:`CorruptFileError` like any other corrupt line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e})") from e
    stray = [m.start() for m in _STRAY.finditer(data)] if tolerant else []  # offsets of the bytes to restore
    table = _fast_table(data.translate(_RESTORE_BIT5) if stray else data, ncols)
    if table is not None:
        if stray:
            _warn_repaired(path, sorted({data.count(b"\n", 0, s) + 1 for s in stray}))
        return table
    # slow path: go line by line to repair what can be repaired and to name the first line that cannot
    rows, repaired = [], []
    for i, ln in enumerate(data.split(b"\n"), start=1):
        if not ln.split():
            continue
        vals = _floats(ln)
        if vals is None and tolerant:
            vals = _floats(ln.translate(_RESTORE_BIT5))
            repaired.append(i)
        if vals is None:
            shown = ln.decode("latin-1").strip()[:80]  # latin-1 maps every byte to a character: never fails
            raise CorruptFileError(path, f"line {i} is not numeric: {shown!r}")
        if len(vals) != ncols:
            raise CorruptFileError(path, f"line {i} has {len(vals)} values but {ncols} are expected ({columns})")
        rows.append(vals)
    if not rows:
        raise CorruptFileError(path, f"is empty (expected rows of {columns})")
    if repaired:
        _warn_repaired(path, repaired)
    return np.asarray(rows, dtype=np.float64)


def _fast_table(data: bytes, ncols: int) -> np.ndarray | None:
    """(N, ncols) float64 in one vectorised conversion, or None unless every non-blank line holds ncols numbers."""
    counts = {len(ln.split()) for ln in data.split(b"\n")}  # bytes.split() splits on ASCII whitespace only
    if not counts <= {0, ncols} or ncols not in counts:
        return None
    try:
        return np.array(data.split(), dtype=np.float64).reshape(-1, ncols)
    except ValueError:  # a token that is not a number
        return None


def _warn_repaired(path, lines: list[int]) -> None:
    warnings.warn(f"{path}: repaired stray control bytes on line(s) {lines[:10]} (each read as the printable "
                  f"character whose 0x20 bit it lost, e.g. \\x00 → space; see ssl3d.data.formats.read_table)",
                  stacklevel=4)


def _floats(line: bytes) -> list[float] | None:
    """The whitespace-separated numbers of one line, or None when a token is not a number."""
    try:
        return [float(t) for t in line.split()]
    except ValueError:
        return None


def read_matrix(path, shape=(4, 4)) -> np.ndarray:
    """A whitespace-separated matrix text file (ScanNet poses/intrinsics) → float64 array of ``shape``."""
    path = Path(path)
    try:
        vals = np.array(path.read_bytes().split(), dtype=np.float64)  # accepts 'inf', '-inf', 'nan'
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e})") from e
    except ValueError as e:
        raise CorruptFileError(path, f"is not a numeric matrix ({e})") from None
    if vals.size != np.prod(shape):
        raise CorruptFileError(path, f"has {vals.size} numbers, expected a {shape[0]} x {shape[1]} matrix")
    return vals.reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# PLY
# ----------------------------------------------------------------------------------------------------------
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def read_ply(path) -> dict[str, dict[str, np.ndarray]]:
    """Read a PLY file (``ascii``, ``binary_little_endian`` or ``binary_big_endian``) into plain arrays.

    Returns ``{element name: {property name: array}}`` in file order, e.g. for ScanNet's
    ``*_vh_clean_2.labels.ply``::

        {"vertex": {"x": (V,) float32, ..., "red": (V,) uint8, ..., "label": (V,) uint16},
         "face":   {"vertex_indices": (F, 3) int32}}

    Scalar properties keep their PLY type. A list property (``property list uchar int vertex_indices``) is a
    (count, k) array when every row has the same length k, otherwise a 1-D object array of per-row arrays.
    Comments are skipped. Raises :class:`CorruptFileError` naming the file when the header is malformed or the
    body is truncated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e})") from e
    if not data.startswith(b"ply"):
        raise CorruptFileError(path, "is not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise CorruptFileError(path, "PLY header has no 'end_header' line: the file is truncated or not PLY")
    body_start = data.find(b"\n", end) + 1
    if body_start == 0:
        body_start = len(data)
    fmt, elements = None, []  # elements: [name, count, [(prop, dtype) or (prop, cnt_t, item_t)]]
    for ln in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        w = ln.split()
        if not w:
            continue
        try:
            if w[0] == "format":
                fmt = w[1]
            elif w[0] in ("comment", "obj_info"):
                continue
            elif w[0] == "element":
                elements.append([w[1], int(w[2]), []])
            elif w[0] == "property" and w[1] == "list":
                elements[-1][2].append((w[4], _PLY_TYPES[w[2]], _PLY_TYPES[w[3]]))
            elif w[0] == "property":
                elements[-1][2].append((w[2], _PLY_TYPES[w[1]]))
            else:
                raise ValueError(f"unknown keyword {w[0]!r}")
        except (IndexError, KeyError, ValueError) as e:
            raise CorruptFileError(path, f"malformed PLY header line {ln!r} ({e})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise CorruptFileError(path, f"unsupported PLY format {fmt!r}")
    out: dict[str, dict[str, np.ndarray]] = {}
    if fmt == "ascii":
        tokens = data[body_start:].split()
        pos = 0
        for name, count, props in elements:
            out[name], pos = _ply_ascii_element(path, name, count, props, tokens, pos)
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        pos = body_start
        for name, count, props in elements:
            out[name], pos = _ply_binary_element(path, name, count, props, data, pos, endian)
    return out


def _ply_ascii_element(path, name, count, props, tokens, pos):
    """Parse ``count`` rows of one element from the ascii body tokens starting at ``pos``."""
    def need(n):
        if pos + n > len(tokens):
            raise CorruptFileError(path, f"PLY body ends inside element '{name}' (truncated file)")

    try:
        if all(len(p) == 2 for p in props):  # scalar properties only: one vectorised conversion
            k = len(props)
            need(count * k)
            table = np.array(tokens[pos:pos + count * k], dtype=np.float64).reshape(count, k)
            cols = {p[0]: table[:, j].astype(p[1]) for j, p in enumerate(props)}
            return cols, pos + count * k
        rows: dict[str, list] = {p[0]: [] for p in props}
        for _ in range(count):
            for p in props:
                if len(p) == 2:
                    need(1)
                    rows[p[0]].append(float(tokens[pos]))
                    pos += 1
                else:
                    need(1)
                    n = int(tokens[pos])
                    need(1 + n)
                    rows[p[0]].append(np.array(tokens[pos + 1:pos + 1 + n], dtype=np.float64).astype(p[2]))
                    pos += 1 + n
    except ValueError as e:
        raise CorruptFileError(path, f"non-numeric value in PLY element '{name}' ({e})") from None
    cols = {}
    for p in props:
        cols[p[0]] = np.array(rows[p[0]], dtype=p[1]) if len(p) == 2 else _stack_lists(rows[p[0]], p[2])
    return cols, pos


def _stack_lists(lists: list[np.ndarray], dtype) -> np.ndarray:
    """(count, k) array when all lists have length k, else an object array of arrays."""
    if lists and all(len(x) == len(lists[0]) for x in lists):
        return np.stack(lists).astype(dtype)
    if not lists:
        return np.zeros((0, 0), dtype=dtype)
    obj = np.empty(len(lists), dtype=object)
    obj[:] = lists
    return obj


def _ply_binary_element(path, name, count, props, data: bytes, pos: int, endian: str):
    """Parse ``count`` rows of one element from the binary body starting at byte ``pos``."""
    def truncated():
        return CorruptFileError(path, f"PLY body ends inside element '{name}' (expected {count} rows): "
                                      f"the file is truncated")

    if all(len(p) == 2 for p in props):
        dt = np.dtype([(p[0], endian + p[1]) for p in props])
        if pos + count * dt.itemsize > len(data):
            raise truncated()
        arr = np.frombuffer(data, dtype=dt, count=count, offset=pos)
        return {p[0]: arr[p[0]].astype(p[1]) for p in props}, pos + count * dt.itemsize
    if count == 0:
        return {p[0]: np.zeros((0, 0) if len(p) == 3 else 0, dtype=p[-1]) for p in props}, pos
    # Fast path: guess that every list has the length found in the first row (triangle meshes), read all
    # rows with one structured dtype, then verify the stored counts. Otherwise fall back to a row loop.
    fields, q = [], pos
    for p in props:
        if len(p) == 2:
            fields.append((p[0], endian + p[1]))
            q += np.dtype(p[1]).itemsize
        else:
            if q + np.dtype(p[1]).itemsize > len(data):
                raise truncated()
            n = int(np.frombuffer(data, dtype=endian + p[1], count=1, offset=q)[0])
            fields += [(p[0] + "#n", endian + p[1]), (p[0], endian + p[2], (n,))]
            q += np.dtype(p[1]).itemsize + n * np.dtype(p[2]).itemsize
    dt = np.dtype(fields)
    if pos + count * dt.itemsize <= len(data):
        arr = np.frombuffer(data, dtype=dt, count=count, offset=pos)
        if all((arr[p[0] + "#n"] == dt[p[0]].shape[0]).all() for p in props if len(p) == 3):
            cols = {p[0]: arr[p[0]].astype(p[-1]) for p in props}
            return cols, pos + count * dt.itemsize
    rows: dict[str, list] = {p[0]: [] for p in props}
    for _ in range(count):
        for p in props:
            size = np.dtype(p[1]).itemsize
            if pos + size > len(data):
                raise truncated()
            v = np.frombuffer(data, dtype=endian + p[1], count=1, offset=pos)[0]
            pos += size
            if len(p) == 2:
                rows[p[0]].append(v)
                continue
            n, isz = int(v), np.dtype(p[2]).itemsize
            if pos + n * isz > len(data):
                raise truncated()
            rows[p[0]].append(np.frombuffer(data, dtype=endian + p[2], count=n, offset=pos).astype(p[2]))
            pos += n * isz
    cols = {}
    for p in props:
        cols[p[0]] = np.array(rows[p[0]], dtype=p[1]) if len(p) == 2 else _stack_lists(rows[p[0]], p[2])
    return cols, pos


# ----------------------------------------------------------------------------------------------------------
# OFF
# ----------------------------------------------------------------------------------------------------------
def read_off(path) -> tuple[np.ndarray, np.ndarray]:
    """Read an OFF mesh → ``vertices (V, 3) float32, faces (F, 3) int64``.

    Format: a line ``OFF``, a line ``V F E``, V lines ``x y z``, F lines ``n i1 ... in``. Polygons with n > 3
    are split into a triangle fan (i1, ik, ik+1). Lines starting with ``#`` are comments.
    Quirk handled: many ModelNet40 files fuse the header and the counts on the first line, e.g.
    ``OFF1234 5678 0``.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e})") from e
    lines = [ln.split("#", 1)[0].strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise CorruptFileError(path, "is not an OFF file (the first line does not start with 'OFF')")
    rest = lines[0][3:].strip()  # "" for a normal header, "1234 5678 0" for the fused quirk
    body = lines[1:] if rest else lines[2:]
    counts = rest if rest else (lines[1] if len(lines) > 1 else "")
    try:
        nv, nf = (int(c) for c in counts.split()[:2])
    except ValueError:
        raise CorruptFileError(path, f"malformed OFF counts line {counts!r} (expected 'V F E')") from None
    if len(body) < nv + nf:
        raise CorruptFileError(path, f"has {len(body)} data lines but the header announces {nv} vertices + "
                                     f"{nf} faces: the file is truncated")
    try:
        vertices = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64).reshape(nv, 3)
        face_lines = body[nv:nv + nf]
        flat = " ".join(face_lines).split()
        if len(flat) == 4 * nf and all(t == "3" for t in flat[::4]):  # fast path: all triangles
            faces = np.array(flat, dtype=np.int64).reshape(nf, 4)[:, 1:]
        else:
            tris = []
            for ln in face_lines:
                idx = [int(t) for t in ln.split()]
                poly = idx[1:1 + idx[0]]
                if len(poly) != idx[0] or idx[0] < 3:
                    raise ValueError(f"bad face line {ln!r}")
                tris += [(poly[0], poly[k], poly[k + 1]) for k in range(1, len(poly) - 1)]
            faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    except ValueError as e:
        raise CorruptFileError(path, f"malformed OFF data ({e})") from None
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise CorruptFileError(path, f"face indices out of range [0, {nv})")
    return vertices.astype(np.float32), faces

