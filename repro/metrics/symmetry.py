"""Symmetry transformations of object models, exactly as bop_toolkit derives them.

``misc.get_symmetry_transformations`` turns a ``models_info.json`` entry into a list of rigid
transformations ``{R, t}`` (model frame) under which the model looks the same:

* the identity followed by every ``symmetries_discrete`` 4x4 matrix, in file order;
* for every continuous symmetry (``axis`` through ``offset``), ``n = ceil(pi / max_sym_disc_step)``
  rotations by ``i * 2 pi / n`` (i = 0..n-1) about the axis, with ``t = offset - R offset``
  (315 rotations for the BOP19 step 0.01);
* the product set: for each discrete ``D`` (identity first) and each continuous ``C``:
  ``R = C_R D_R``, ``t = C_R D_t + C_t`` (discrete-major order); without continuous symmetries
  the discrete set alone.

With several continuous symmetries their rotations are simply concatenated (as the toolkit does),
not composed. The arithmetic follows the toolkit operation by operation, so the matrices are
bit-identical to it; MSSD/MSPD take the minimum over this set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOP19_MAX_SYM_DISC_STEP = 0.01


@dataclass(frozen=True, eq=False)
class SymmetrySet:
    """A set of model-frame symmetry transformations: ``R`` (S, 3, 3) and ``t`` (S, 3), mm.

    Index 0 is always the identity.
    """

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.ascontiguousarray(self.R, dtype=np.float64).reshape(-1, 3, 3)
        t = np.ascontiguousarray(self.t, dtype=np.float64).reshape(-1, 3)
        if len(R) != len(t) or len(R) == 0:
            raise ValueError(f"symmetry set needs as many rotations as translations (>= 1), got {len(R)}, {len(t)}")
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    def __len__(self) -> int:
        return len(self.R)

    @classmethod
    def identity(cls) -> SymmetrySet:
        return cls(np.eye(3)[None], np.zeros((1, 3)))

    def as_4x4(self) -> np.ndarray:
        """The transformations as (S, 4, 4) homogeneous matrices."""
        T = np.zeros((len(self), 4, 4))
        T[:, :3, :3] = self.R
        T[:, :3, 3] = self.t
        T[:, 3, 3] = 1.0
        return T


def rotation_matrix(angle: float, axis: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 rotation by ``angle`` (rad) about ``axis`` (normalised here), bop_toolkit's
    ``transform.rotation_matrix`` operation by operation (Rodrigues' formula)."""
    sina = math.sin(angle)
    cosa = math.cos(angle)
    direction = np.array(axis, dtype=np.float64, copy=True)[:3]
    direction /= math.sqrt(np.dot(direction, direction))
    R = np.diag([cosa, cosa, cosa])
    R += np.outer(direction, direction) * (1.0 - cosa)
    direction *= sina
    R += np.array([[0.0, -direction[2], direction[1]],
                   [direction[2], 0.0, -direction[0]],
                   [-direction[1], direction[0], 0.0]])
    return R


def _continuous_entries(info: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(axis, offset) pairs of an info entry, raw lists or parsed ``ContinuousSymmetry`` objects."""
    out = []
    for sym in info.get("symmetries_continuous", []) or []:
        if isinstance(sym, Mapping):
            axis, offset = sym["axis"], sym.get("offset", (0.0, 0.0, 0.0))
        else:
            axis, offset = sym.axis, sym.offset
        out.append((np.array(axis, dtype=np.float64), np.array(offset, dtype=np.float64).reshape(3, 1)))
    return out


def symmetry_transformations(info: Mapping[str, Any],
                             max_sym_disc_step: float = BOP19_MAX_SYM_DISC_STEP) -> SymmetrySet:
    """The symmetry set of one ``models_info`` entry (see the module docstring).

    ``info`` may hold the raw JSON lists or the parsed arrays of ``repro.data.bop.parse_models_info``
    (pass the raw entry when the axis is not a unit vector, to normalise it as the toolkit does).
    """
    trans_disc = [(np.eye(3), np.zeros((3, 1)))]
    for sym in info.get("symmetries_discrete", []) or []:
        m = np.reshape(np.asarray(sym, dtype=np.float64), (4, 4))
        trans_disc.append((m[:3, :3], m[:3, 3].reshape(3, 1)))

    trans_cont = []
    for axis, offset in _continuous_entries(info):
        steps = int(np.ceil(np.pi / max_sym_disc_step))
        step = 2.0 * np.pi / steps
        for i in range(steps):
            R = rotation_matrix(i * step, axis)
            trans_cont.append((R, -R.dot(offset) + offset))

    Rs, ts = [], []
    for R_d, t_d in trans_disc:
        if trans_cont:
            for R_c, t_c in trans_cont:
                Rs.append(R_c.dot(R_d))
                ts.append(R_c.dot(t_d) + t_c)
        else:
            Rs.append(R_d)
            ts.append(t_d)
    return SymmetrySet(np.stack(Rs), np.stack(ts).reshape(-1, 3))


def symmetry_sets(models_info: Mapping[int, Mapping[str, Any]],
                  max_sym_disc_step: float = BOP19_MAX_SYM_DISC_STEP) -> dict[int, SymmetrySet]:
    """``symmetry_transformations`` for every object of a ``models_info`` mapping."""
    return {int(k): symmetry_transformations(v, max_sym_disc_step) for k, v in models_info.items()}


def is_symmetric(info: Mapping[str, Any]) -> bool:
    """True when the entry declares any discrete or continuous symmetry (ADD-S is used for ``ad``)."""
    return bool(info.get("symmetries_discrete")) or bool(info.get("symmetries_continuous"))
