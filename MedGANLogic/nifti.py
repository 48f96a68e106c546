"""What ITK's NIfTI reader does not check: a file shorter than its header says, and NaN voxels.

ITK reads a truncated ``.nii`` / ``.nii.gz`` with the missing voxels as zeros, and reads NaN and infinite voxels
as 0. Here MedGAN reads the NIfTI-1 or NIfTI-2 header itself (either byte order), compares the data size the
header declares with what the file holds, and scans float data for NaN and infinities so that the reader can put
them back.

Cost: a ``.nii`` is checked from its size; float data is scanned once more (uncompressed: a plain read; ``.nii.gz``:
a second decompression). An integer ``.nii.gz`` is checked from the gzip trailer when it matches, else decompressed.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

_FLOAT_TYPES = {16: np.float32, 64: np.float64}  # NIfTI datatype codes of real float voxels
_CHUNK = 1 << 22  # bytes decompressed or read at a time


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a single-file NIfTI header that say how much voxel data follows it."""

    shape: tuple[int, ...]  # dim[1..dim[0]], x fastest
    datatype: int
    bitpix: int
    vox_offset: int  # bytes before the first voxel
    byte_order: str  # "<" or ">"

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.bitpix // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        kind = _FLOAT_TYPES.get(self.datatype)
        return None if kind is None else np.dtype(kind).newbyteorder(self.byte_order)


def parse_header(raw: bytes) -> NiftiHeader | None:
    """The header of a single-file NIfTI-1/NIfTI-2 (``.nii``) from its first 540 bytes, or None if it is not one."""
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348 and raw[344:347] == b"n+1":
            dim = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            vox_offset = int(struct.unpack(order + "f", raw[108:112])[0])
            break
        if len(raw) >= 540 and struct.unpack(order + "i", raw[:4])[0] == 540 and raw[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dim = struct.unpack(order + "8q", raw[16:80])
            vox_offset = struct.unpack(order + "q", raw[168:176])[0]
            break
    else:
        return None
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dim[1:ndim + 1]) or bitpix <= 0 or bitpix % 8 or vox_offset < 348:
        return None  # not something whose size can be checked; ITK will say what is wrong with it
    return NiftiHeader(tuple(int(d) for d in dim[1:ndim + 1]), datatype, bitpix, vox_offset, order)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _gzip_trailer_size(path: Path) -> int:
    """The uncompressed size modulo 2^32 that a complete single-member gzip file records in its last 4 bytes."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _truncated(path: Path, header: NiftiHeader, have: int) -> InputError:
    want = header.vox_offset + header.data_bytes
    return InputError(f"{path} is truncated: it holds {have} bytes where its header declares {want} ({header.shape} "
                      f"voxels of {header.bitpix // 8} bytes after a {header.vox_offset}-byte header); ITK would read "
                      f"the missing voxels as zeros. Copy or export the file again.")


def check_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Refuse a NIfTI file shorter than its header says; find its NaN and infinite voxels.

    Returns:
        None when every voxel is finite (or the data is not float), else ``(mask, values)``: a flat boolean mask
        over the voxels in file order (x fastest), True where the file stores NaN or +-inf, and those values (float64)
        in the same order.

    Raises:
        InputError: the file is truncated, or its compressed data is corrupt.
    """
    path = Path(path)
    gz = _is_gzip(path)
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            header = parse_header(f.read(540))
    except (OSError, EOFError, zlib.error):
        return None  # not even a whole header: ITK's own error says what is wrong
    if header is None:
        return None
    want = header.vox_offset + header.data_bytes
    dtype = header.float_dtype
    if not gz:
        have = path.stat().st_size
        if have < want:
            raise _truncated(path, header, have)
        if dtype is None:
            return None
    elif dtype is None and _gzip_trailer_size(path) == want % 2 ** 32:
        return None  # a truncated file ends in compressed data: its last 4 bytes match only by a 1 in 2^32 chance
    return _scan(path, header, opener)


def _scan(path: Path, header: NiftiHeader, opener) -> tuple[np.ndarray, np.ndarray] | None:
    """Read the voxel data once: count it and, when it is float, find the voxels that are not finite."""
    dtype = header.float_dtype
    itemsize = header.bitpix // 8
    mask, values = None, []
    skipped, seen, start, pending = 0, 0, 0, b""
    try:
        with opener(path, "rb") as f:
            skipped = len(f.read(header.vox_offset))
            while seen < header.data_bytes:
                block = f.read(min(_CHUNK, header.data_bytes - seen))
                if not block:
                    break
                seen += len(block)
                if dtype is None:
                    continue
                data = pending + block if pending else block
                count = len(data) // itemsize
                voxels = np.frombuffer(data, dtype=dtype, count=count)
                bad = ~np.isfinite(voxels)
                if bad.any():
                    if mask is None:
                        mask = np.zeros(math.prod(header.shape), dtype=bool)
                    mask[start:start + count] = bad
                    values.append(voxels[bad].astype(np.float64))
                start += count
                pending = data[count * itemsize:]
    except EOFError:  # a gzip stream cut short: what was decompressed is all there is
        pass
    except (OSError, zlib.error) as exc:
        raise InputError(f"Cannot read {path}: its compressed data is corrupt ({exc}). Copy or export the file "
                         f"again.") from exc
    if seen < header.data_bytes:
        raise _truncated(path, header, skipped + seen)
    return None if mask is None else (mask, np.concatenate(values))
