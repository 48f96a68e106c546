"""`Volume`: voxels and their geometry travel together.

Conventions (those of ITK/SimpleITK, which reads and writes every file MedGAN touches):

* ``array`` is indexed ``[k, j, i]`` = ``[z, y, x]`` (slice, row, column), float32 for images and an integer
  type for label maps.
* ``spacing`` and ``origin`` are given in ``(x, y, z)`` order, in millimetres, in the LPS patient frame.
* ``direction`` is the 3x3 ITK direction matrix: column ``c`` is the LPS unit vector of index axis ``c``
  (``i``, ``j``, ``k``).

So the physical (LPS) position of voxel ``array[k, j, i]`` is ``origin + direction @ (spacing * (i, j, k))``.
3D Slicer works in RAS; :meth:`Volume.ijk_to_ras` gives the 4x4 matrix a ``vtkMRMLVolumeNode`` takes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_LABEL_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32)


@dataclass(eq=False)
class Volume:
    """A 3D scalar image with its geometry and free-form metadata.

    Args:
        array: voxels, shape ``(z, y, x)``; converted to float32 unless it is an integer label map.
        spacing: voxel size in mm, ``(x, y, z)``.
        origin: LPS position in mm of voxel ``(0, 0, 0)``, ``(x, y, z)``.
        direction: 3x3 direction cosines (ITK convention: columns are the i, j, k axes in LPS).
        metadata: e.g. ``{"modality": "CT", "units": "HU"}`` or ``{"modality": "MR", "contrast": "T1w"}``;
            outputs also carry ``"synthetic": True`` and ``"provenance"``.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6)), spacing=(1.0, 1.0, 3.0))
        >>> v.shape, v.spacing
        ((4, 5, 6), (1.0, 1.0, 3.0))
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array (z, y, x); got shape {array.shape}.")
        if array.dtype not in _LABEL_DTYPES and array.dtype != np.float32:
            array = array.astype(np.float32)
        self.array = array
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("spacing and origin need 3 values each, in (x, y, z) order.")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive; got {self.spacing}.")
        self.metadata = dict(self.metadata)

    # --- shape and geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def modality(self) -> str | None:
        return self.metadata.get("modality")

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` indices to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK→RAS matrix, as 3D Slicer's volume nodes store it."""
        m = self.ijk_to_lps()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, ijk_to_ras: np.ndarray, metadata: dict | None = None) -> Volume:
        """Build a Volume from a Slicer-style IJK→RAS matrix (any rotation, anisotropic spacing)."""
        m = np.asarray(ijk_to_ras, dtype=np.float64)
        lps = LPS_TO_RAS @ m[:3, :]
        axes = lps[:, :3]
        spacing = np.linalg.norm(axes, axis=0)
        return cls(array, spacing=tuple(spacing), origin=tuple(lps[:, 3]),
                   direction=axes / spacing, metadata=metadata or {})

    def physical_extent(self) -> np.ndarray:
        """Field of view in mm along (x, y, z): voxels times spacing (edge to edge)."""
        return np.array(self.shape[::-1], dtype=np.float64) * np.array(self.spacing)

    def same_geometry(self, other: Volume, atol: float = 1e-6) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, rtol=0, atol=atol)
                and np.allclose(self.origin, other.origin, rtol=0, atol=atol)
                and np.allclose(self.direction, other.direction, rtol=0, atol=atol))

    # --- derived volumes ------------------------------------------------------------------------------
    def with_array(self, array: np.ndarray, metadata: dict | None = None, **geometry: Any) -> Volume:
        """A new Volume on this one's grid (or with ``spacing``/``origin`` overridden) holding ``array``."""
        meta = copy.deepcopy(self.metadata)
        if metadata:
            meta.update(metadata)
        return Volume(array, spacing=geometry.get("spacing", self.spacing),
                      origin=geometry.get("origin", self.origin),
                      direction=geometry.get("direction", self.direction), metadata=meta)

    def resampled_grid(self, scale: tuple[float, float, float]) -> dict[str, Any]:
        """Geometry of a grid ``scale`` (z, y, x) times finer covering exactly the same field of view.

        The new voxel centres are placed so that the outer voxel edges coincide with the old ones:
        spacing shrinks by ``scale`` and the origin moves half a new voxel towards the old edge.
        """
        scale_xyz = np.array(scale[::-1], dtype=np.float64)
        old = np.array(self.spacing)
        new = old / scale_xyz
        shift_index = (new - old) / 2.0  # in mm along each index axis
        origin = np.array(self.origin) + self.direction @ shift_index
        shape = tuple(int(round(n * s)) for n, s in zip(self.shape, scale))
        return {"spacing": tuple(new), "origin": tuple(origin), "direction": self.direction.copy(), "shape": shape}

    def copy(self) -> Volume:
        return Volume(self.array.copy(), self.spacing, self.origin, self.direction.copy(),
                      copy.deepcopy(self.metadata))

    def __repr__(self) -> str:
        return (f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
                f"origin={tuple(round(o, 3) for o in self.origin)}, metadata={self.metadata})")
