"""PLY meshes as the BOP datasets store them (ASCII or binary; normals, colours, texture uv).

A small dedicated reader keeps vertex order and duplicates exactly as in the file (metrics such
as ADD average over the stored vertices, as bop_toolkit's ``inout.load_ply`` does) and never
re-processes the mesh.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.errors import DataFormatError
from repro.fileio import atomic_write_bytes

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass(frozen=True)
class PlyMesh:
    """Raw mesh arrays: ``vertices`` (N,3) float64, ``faces`` (F,3) int64, optional per-vertex
    ``normals`` (N,3), ``colors`` (N,3) in [0, 1], ``uv`` (N,2) and a ``texture_file`` name."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture_file: str | None = None


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str, str | None]]  # (name, type, list item type or None)


def _parse_header(path: Path, f: io.BufferedReader) -> tuple[str, list[_Element], list[str]]:
    if f.readline().strip() != b"ply":
        raise DataFormatError(path, "not a PLY file (missing 'ply' magic)", line=1)
    fmt, elements, comments, line_no = "", [], [], 1
    while True:
        raw = f.readline()
        line_no += 1
        if not raw:
            raise DataFormatError(path, "header ends without 'end_header'", line=line_no)
        parts = raw.decode("ascii", "replace").split()
        if not parts:
            continue
        key = parts[0]
        if key == "end_header":
            break
        if key == "format":
            fmt = parts[1]
            if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise DataFormatError(path, f"unknown PLY format {fmt!r}", line=line_no)
        elif key in ("comment", "obj_info"):
            comments.append(" ".join(parts[1:]))
        elif key == "element":
            elements.append(_Element(parts[1], int(parts[2]), []))
        elif key == "property":
            if not elements:
                raise DataFormatError(path, "property before any element", line=line_no)
            if parts[1] == "list":
                if parts[2] not in _PLY_TYPES or parts[3] not in _PLY_TYPES:
                    raise DataFormatError(path, f"unknown list type in {raw!r}", line=line_no)
                elements[-1].props.append((parts[4], parts[2], parts[3]))
            else:
                if parts[1] not in _PLY_TYPES:
                    raise DataFormatError(path, f"unknown property type {parts[1]!r}", line=line_no)
                elements[-1].props.append((parts[2], parts[1], None))
    if not fmt:
        raise DataFormatError(path, "header has no 'format' line")
    return fmt, elements, comments


def _read_binary(path: Path, data: bytes, offset: int, el: _Element, endian: str) -> tuple[dict, int]:
    """Read one element; lists are assumed fixed-length (true for triangle meshes) and checked."""
    if el.count == 0:
        return {p[0]: np.zeros((0,)) for p in el.props}, offset
    fields: list[tuple] = []
    rec_off = 0  # byte offset of the next property within the first record
    for name, typ, item in el.props:
        ctype = endian + _PLY_TYPES[typ]
        if item is None:
            fields.append((name, ctype))
            rec_off += np.dtype(ctype).itemsize
        else:
            n = int(np.frombuffer(data, ctype, 1, offset + rec_off)[0])
            itype = endian + _PLY_TYPES[item]
            fields += [(name + "__n", ctype), (name, itype, (n,))]
            rec_off += np.dtype(ctype).itemsize + n * np.dtype(itype).itemsize
    dtype = np.dtype(fields)
    end = offset + dtype.itemsize * el.count
    if end > len(data):
        raise DataFormatError(path, f"element '{el.name}': file truncated (needs {end} bytes, has {len(data)})")
    arr = np.frombuffer(data, dtype, el.count, offset)
    out = {}
    for name, _typ, item in el.props:
        if item is not None and np.any(arr[name + "__n"] != arr[name].shape[1]):
            raise DataFormatError(path, f"element '{el.name}': lists of varying length are not supported "
                                        f"(property '{name}')")
        out[name] = np.array(arr[name])
    return out, end


def _read_ascii(path: Path, lines: list[bytes], start: int, el: _Element) -> tuple[dict, int]:
    rows = lines[start:start + el.count]
    if len(rows) < el.count:
        raise DataFormatError(path, f"element '{el.name}': expected {el.count} lines, found {len(rows)}")
    try:
        if all(item is None for _, _, item in el.props):
            table = np.array([r.split() for r in rows], dtype=np.float64).reshape(el.count, len(el.props))
            return {name: table[:, i] for i, (name, _, _) in enumerate(el.props)}, start + el.count
        tokens = [r.split() for r in rows]
        out: dict[str, list] = {name: [] for name, _, _ in el.props}
        for i, tok in enumerate(tokens):
            pos = 0
            for name, _typ, item in el.props:
                if item is None:
                    out[name].append(float(tok[pos]))
                    pos += 1
                else:
                    n = int(tok[pos])
                    out[name].append([float(v) for v in tok[pos + 1:pos + 1 + n]])
                    pos += 1 + n
            if pos != len(tok):
                raise ValueError(f"line {i + 1} of the element has {len(tok)} values, expected {pos}")
        result = {}
        for name, values in out.items():
            lengths = {len(v) for v in values} if values and isinstance(values[0], list) else None
            if lengths is not None and len(lengths) > 1:
                raise ValueError(f"lists of varying length in property '{name}' are not supported")
            result[name] = np.array(values, dtype=np.float64)
        return result, start + el.count
    except (ValueError, IndexError) as exc:
        raise DataFormatError(path, f"element '{el.name}': {exc}") from None


def load_ply(path: str | Path) -> PlyMesh:
    """Read a triangle mesh from a PLY file (ASCII or binary)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY model not found: {path}")
    with path.open("rb") as f:
        fmt, elements, comments = _parse_header(path, f)
        body = f.read()
    columns: dict[str, dict] = {}
    if fmt == "ascii":
        lines = [ln for ln in body.splitlines() if ln.strip()]
        pos = 0
        for el in elements:
            columns[el.name], pos = _read_ascii(path, lines, pos, el)
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        offset = 0
        for el in elements:
            columns[el.name], offset = _read_binary(path, body, offset, el, endian)
    if "vertex" not in columns:
        raise DataFormatError(path, "no 'vertex' element")
    v = columns["vertex"]
    for axis in "xyz":
        if axis not in v:
            raise DataFormatError(path, f"vertex element lacks property '{axis}'")
    vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    faces = np.zeros((0, 3), np.int64)
    if "face" in columns:
        fc = columns["face"]
        key = "vertex_indices" if "vertex_indices" in fc else "vertex_index" if "vertex_index" in fc else None
        if key is None:
            raise DataFormatError(path, "face element lacks 'vertex_indices'")
        faces = np.asarray(fc[key], dtype=np.int64).reshape(len(fc[key]), -1)
        if faces.shape[1] != 3 and len(faces):
            raise DataFormatError(path, f"only triangle meshes are supported, faces have {faces.shape[1]} vertices")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise DataFormatError(path, "face vertex index out of range")
    normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=1).astype(np.float64) if "nx" in v else None
    colors = None
    if "red" in v:
        colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float64) / 255.0
    uv = None
    if "texture_u" in v:
        uv = np.stack([v["texture_u"], v["texture_v"]], axis=1).astype(np.float64)
    elif "s" in v and "t" in v:
        uv = np.stack([v["s"], v["t"]], axis=1).astype(np.float64)
    texture = next((c.split(None, 1)[1] for c in comments if c.lower().startswith("texturefile")), None)
    return PlyMesh(vertices, faces, normals, colors, uv, texture)


def save_ply(path: str | Path, mesh: PlyMesh, *, binary: bool = True, comment: str = "") -> Path:
    """Write a mesh as PLY (binary little endian by default), atomically."""
    n = len(mesh.vertices)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header_props = ["property float x", "property float y", "property float z"]
    cols: dict[str, np.ndarray] = {"x": mesh.vertices[:, 0], "y": mesh.vertices[:, 1], "z": mesh.vertices[:, 2]}
    if mesh.normals is not None:
        for i, a in enumerate(("nx", "ny", "nz")):
            fields.append((a, "<f4"))
            header_props.append(f"property float {a}")
            cols[a] = mesh.normals[:, i]
    if mesh.colors is not None:
        rgb = np.clip(np.round(np.asarray(mesh.colors) * 255.0), 0, 255).astype(np.uint8)
        for i, a in enumerate(("red", "green", "blue")):
            fields.append((a, "u1"))
            header_props.append(f"property uchar {a}")
            cols[a] = rgb[:, i]
    if mesh.uv is not None:
        for i, a in enumerate(("texture_u", "texture_v")):
            fields.append((a, "<f4"))
            header_props.append(f"property float {a}")
            cols[a] = mesh.uv[:, i]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    if comment:
        header.append(f"comment {comment}")
    if mesh.texture_file:
        header.append(f"comment TextureFile {mesh.texture_file}")
    header += [f"element vertex {n}", *header_props, f"element face {len(mesh.faces)}",
               "property list uchar int vertex_indices", "end_header"]
    out = io.BytesIO()
    out.write(("\n".join(header) + "\n").encode("ascii"))
    if binary:
        varr = np.zeros(n, dtype=np.dtype(fields))
        for name, _ in fields:
            varr[name] = cols[name]
        out.write(varr.tobytes())
        farr = np.zeros(len(mesh.faces), dtype=np.dtype([("n", "u1"), ("idx", "<i4", (3,))]))
        farr["n"] = 3
        farr["idx"] = mesh.faces
        out.write(farr.tobytes())
    else:
        for i in range(n):
            out.write((" ".join(
                str(int(cols[name][i])) if t == "u1" else repr(float(np.float32(cols[name][i])))
                for name, t in fields) + "\n").encode())
        for f in mesh.faces:
            out.write(f"3 {int(f[0])} {int(f[1])} {int(f[2])}\n".encode())
    return atomic_write_bytes(path, out.getvalue())
