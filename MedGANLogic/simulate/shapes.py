"""Geometry for painting structures into a random anatomy in the template's own coordinates (MNI mm, RAS).

The face (:mod:`.face`) and the enhancing vessels (:mod:`.vessels`) are drawn as signed distances (mm, negative
inside) to simple shapes, turned into partial-volume coverage of the sample's voxels.
"""

from __future__ import annotations

import numpy as np

from .tissue import template_tissues


def template_ras(coords: np.ndarray) -> np.ndarray:
    """MNI RAS mm (3, z, y, x) of template voxel coordinates ``coords`` (3, z, y, x; array order k, j, i)."""
    _, template, _ = template_tissues()
    m = template.ijk_to_lps()
    ijk = np.stack([coords[2], coords[1], coords[0]]).reshape(3, -1)
    lps = m[:3, :3] @ ijk + m[:3, 3:4]
    return (np.array([-1.0, -1.0, 1.0])[:, None] * lps).reshape(coords.shape).astype(np.float32)


def coverage(signed_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Partial-volume coverage of a structure from a signed distance (mm, negative inside)."""
    return np.clip(0.5 - signed_mm / spacing_mm, 0.0, 1.0).astype(np.float32)


def ellipsoid_distance(p: np.ndarray, centre, axes) -> np.ndarray:
    """Approximate signed distance (mm) from points ``p`` (3, ...) to an axis-aligned ellipsoid (exact for a
    ball)."""
    c, a = np.asarray(centre, np.float32), np.asarray(axes, np.float32)
    q = np.sqrt(sum(((p[i] - c[i]) / a[i]) ** 2 for i in range(3)))
    return (q - 1.0) * float(a.min())


def tube_distance(p: np.ndarray, start, end, r_start: float, r_end: float) -> np.ndarray:
    """Signed distance (mm) from points ``p`` (3, ...) to a tapered tube from ``start`` (radius ``r_start``) to
    ``end`` (``r_end``)."""
    s, e = np.asarray(start, np.float32), np.asarray(end, np.float32)
    axis = e - s
    length2 = float(axis @ axis)
    rel = [p[i] - s[i] for i in range(3)]
    t = np.clip(sum(rel[i] * axis[i] for i in range(3)) / length2, 0.0, 1.0)
    d = np.sqrt(sum((rel[i] - t * axis[i]) ** 2 for i in range(3)))
    return d - (r_start + t * (r_end - r_start))
