"""Reorient a volume's voxels by whole axes (permute and flip, no interpolation) and put them back, exactly.

A scan may be stored in any order of its axes: a coronal acquisition's slices (array axis 0) run front to back,
a DICOM series stores rows from anterior to posterior, a NIfTI file from posterior to anterior. The models were
trained on volumes in one orientation (:data:`TRAINING_DIRECTION`, that of the phantoms and the MNI template
they come from). :func:`orientation_to` finds the permutation and flips of the array axes that bring a volume
closest to it, from the direction cosines; :func:`reorient` applies them (the same points in space, new index
order) and :func:`restore` undoes them on any array of the reoriented shape (or a finer one).

Pure numpy; imports neither torch nor Slicer.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from .volume import Volume

#: Direction cosines of the volumes the models were trained on (ITK convention, LPS columns of i, j, k): the
#: phantoms' and the MNI152 template's: i runs to the patient's right, j to the front, k to the head.
TRAINING_DIRECTION = np.diag([-1.0, -1.0, 1.0])

Order = tuple[int, int, int]
Flip = tuple[bool, bool, bool]
IDENTITY: tuple[Order, Flip] = ((0, 1, 2), (False, False, False))


def orientation_to(direction: np.ndarray, target: np.ndarray = TRAINING_DIRECTION) -> tuple[Order, Flip]:
    """(order, flip) of the array axes that bring a volume with ``direction`` closest to ``target``.

    ``order[m]`` is the input array axis (0 = k, 1 = j, 2 = i) that becomes array axis ``m``; ``flip[m]`` says
    whether it then runs the other way. The permutation maximises the summed alignment of the index axes.
    """
    score = np.abs(np.asarray(target).T @ np.asarray(direction))  # [target index axis, input index axis]
    best = max(permutations(range(3)), key=lambda p: sum(score[t, p[t]] for t in range(3)))
    order = tuple(2 - best[2 - m] for m in range(3))  # array axis m <-> index axis 2 - m
    flip = tuple(bool(np.dot(target[:, 2 - m], direction[:, best[2 - m]]) < 0) for m in range(3))
    return order, flip  # type: ignore[return-value]


def nearest_axis_aligned(direction: np.ndarray) -> np.ndarray:
    """The axis-aligned direction (a signed permutation of the patient axes) closest to ``direction``."""
    order, flip = orientation_to(np.eye(3), direction)  # which patient axis each index axis is nearest to
    aligned = np.zeros((3, 3))
    for m in range(3):
        sign = -1.0 if flip[m] else 1.0
        aligned[2 - order[m], 2 - m] = sign
    return aligned


def reoriented_geometry(volume: Volume, order: Order, flip: Flip) -> dict:
    """Shape, spacing, origin and direction of ``volume`` reoriented by (order, flip); the grid's points in space
    are the same."""
    shape = tuple(volume.shape[a] for a in order)
    spacing = tuple(volume.spacing[2 - order[2 - c]] for c in range(3))  # (x, y, z) of the new index axes
    direction = np.stack([volume.direction[:, 2 - order[2 - c]] * (-1.0 if flip[2 - c] else 1.0)
                          for c in range(3)], axis=1)
    first = [0, 0, 0]  # (k, j, i) index in the input of the new array's first voxel
    for m in range(3):
        if flip[m]:
            first[order[m]] = volume.shape[order[m]] - 1
    origin = volume.ijk_to_lps() @ np.array([first[2], first[1], first[0], 1.0])
    return {"shape": shape, "spacing": spacing, "origin": tuple(origin[:3]), "direction": direction}


def reorient(volume: Volume, order: Order, flip: Flip) -> Volume:
    """``volume`` with its array axes permuted and flipped (a view where numpy allows, never a modification)."""
    if (order, flip) == IDENTITY:
        return volume
    geometry = reoriented_geometry(volume, order, flip)
    array = np.transpose(volume.array, order)
    array = array[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
    return Volume(array, spacing=geometry["spacing"], origin=geometry["origin"], direction=geometry["direction"],
                  metadata=volume.metadata)


def restore(array: np.ndarray, order: Order, flip: Flip) -> np.ndarray:
    """Undo :func:`reorient` on an array in the reoriented axis order (any shape along those axes); a view, so an
    output does not cost a second copy of itself."""
    if (order, flip) == IDENTITY:
        return array
    array = array[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
    return np.transpose(array, np.argsort(order))


def describe(order: Order, flip: Flip, planes: tuple[str, str] | None = None) -> str:
    """In words, e.g. "coronal slices -> axial, axes flipped: x, y"."""
    parts = []
    if planes and planes[0] != planes[1]:
        parts.append(f"{planes[0]} slices -> {planes[1]}")
    elif order != (0, 1, 2):
        parts.append(f"array axes (z, y, x) taken in the order {tuple('zyx'[a] for a in order)}")
    flipped = [name for name, f in zip("zyx", flip) if f]
    if flipped:
        parts.append(f"flipped along {', '.join(sorted(flipped, reverse=True))}")
    return "; ".join(parts)
