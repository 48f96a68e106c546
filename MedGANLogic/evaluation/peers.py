"""Published tools run beside MedGAN in the reports, as separate programs: never imported, never copied.

ECLARE (Remedios, Zhao, Carass, Prince: "ECLARE: efficient cross-planar learning for anisotropic resolution
enhancement"; PyPI ``eclare``, GPL-3.0) super-resolves an anisotropic MR volume from the volume alone: it estimates
the slice profile (ESPRESO), degrades the in-plane data to it, learns the inverse and applies it along the slice
axis. It is the peer of MedGAN's fit to the scan (:func:`MedGANLogic.adapt.fit_superres`). It pins scipy 1.11.4
and numpy 1, so it lives in its own virtual environment (``.cache/peers/eclare``: ``make peers`` or
``python -m MedGANLogic.evaluation.peers install``) and runs as its own ``run-eclare`` on a NIfTI file.

ECLARE returns slices as thin as the in-plane pixels over the input's extent; :func:`rebin_slices` brings them
onto the reference grid by averaging each reference slice's extent (a box profile, the model of the degradation
it is scored against).

    python -m MedGANLogic.evaluation.peers install [--folder .cache/peers]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / ".cache" / "peers"
ECLARE_VERSION = "1.0.1"
ECLARE_DEFAULT_PATCHES = 1_000_000  # run-eclare's own default: 7813 steps of its batch of 128
#: what a CPU is given here: 100 steps of its batch (its default takes about 9 hours on two CPU cores)
ECLARE_CPU_PATCHES = 12_800
ENV = "MEDGAN_ECLARE"  # path to a run-eclare executable, over the default folder's


def eclare_command() -> Path | None:
    """The ``run-eclare`` executable: ``$MEDGAN_ECLARE``, else the one in ``.cache/peers/eclare``; None when
    neither exists."""
    given = os.environ.get(ENV)
    path = Path(given) if given else PEERS / "eclare" / "bin" / "run-eclare"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def install_eclare(folder: Path = PEERS) -> Path:
    """A virtual environment ``folder/eclare`` with CPU torch and ECLARE (from PyPI); returns its ``run-eclare``."""
    env = Path(folder) / "eclare"
    command = env / "bin" / "run-eclare"
    if command.is_file():
        return command
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # CPU torch (a bare `torch` pulls a CUDA build)
    subprocess.run([*pip, f"eclare=={ECLARE_VERSION}"], check=True)
    return command


def rebin_slices(fine: np.ndarray, fine_edges: np.ndarray, coarse_edges: np.ndarray) -> np.ndarray:
    """Slices ``fine`` (axis 0; slice i spans ``fine_edges[i]``..``fine_edges[i + 1]``, mm) averaged over each
    coarse slice's span ``coarse_edges[j]``..``coarse_edges[j + 1]``, weighted by overlap. A coarse slice that no
    fine slice overlaps is an error."""
    lo = np.maximum(fine_edges[None, :-1], coarse_edges[:-1, None])
    hi = np.minimum(fine_edges[None, 1:], coarse_edges[1:, None])
    weights = np.clip(hi - lo, 0, None)  # (coarse, fine) overlaps, mm
    total = weights.sum(axis=1)
    if np.any(total <= 0):
        raise ValueError("rebin_slices: a coarse slice lies outside the fine slices")
    out = np.tensordot(weights / total[:, None], np.asarray(fine, np.float64), axes=(1, 0))
    return out.astype(np.float32)


def _slice_edges(volume: Volume, normal: np.ndarray) -> np.ndarray:
    """Edges (mm along ``normal``) of the slices of ``volume`` along its array axis 0."""
    first = float(np.asarray(volume.origin) @ normal)
    return first + (np.arange(volume.shape[0] + 1) - 0.5) * float(volume.spacing[2])


@dataclass
class EclareResult:
    array: np.ndarray  # on the reference grid, (z, y, x)
    seconds: float  # the whole run-eclare process: slice-profile estimate, training, inference
    patches: int
    device: str


def eclare_superres(low: Volume, grid: Volume, *, patches: int, gpu: bool = False,
                    command: Path | None = None) -> EclareResult:
    """ECLARE on ``low`` (thick slices along array axis 0, its largest spacing), brought onto ``grid`` (the same
    extent with thinner slices along axis 0, the same in-plane grid) by :func:`rebin_slices`.

    ``patches``: its ``--n-patches`` (training patches; :data:`ECLARE_DEFAULT_PATCHES` is its default).
    Raises InputError when ECLARE is not installed or the volumes do not fit, RuntimeError when it fails.
    """
    from ..io import read_volume, write_volume

    command = command or eclare_command()
    if command is None:
        raise InputError(f"ECLARE is not installed: run `make peers` (or set {ENV} to a run-eclare executable).")
    if not (low.spacing[2] > max(low.spacing[:2]) and grid.shape[1:] == low.shape[1:]):
        raise InputError("eclare_superres: low needs its thickest spacing along array axis 0 and the grid's "
                         "in-plane shape")
    normal = np.asarray(low.direction, float)[:, 2]
    with tempfile.TemporaryDirectory(prefix="medgan-eclare-") as tmp:
        source = Path(tmp) / "low.nii.gz"
        write_volume(low.with_array(np.asarray(low.array, np.float32), metadata={}), source)
        start = time.perf_counter()
        done = subprocess.run([str(command), "--in-fpath", str(source), "--out-dir", str(Path(tmp) / "out"),
                               "--n-patches", str(int(patches)), "--gpu-id", "0" if gpu else "-1"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        outputs = sorted((Path(tmp) / "out").glob("*_eclare.nii*"))
        if done.returncode != 0 or not outputs:
            tail = (done.stdout + done.stderr)[-2000:]
            raise RuntimeError(f"run-eclare failed (exit {done.returncode}): {tail}")
        fine = read_volume(outputs[0])
    if fine.shape[1:] != low.shape[1:]:
        raise RuntimeError(f"run-eclare returned in-plane shape {fine.shape[1:]}, not the input's {low.shape[1:]}")
    fine_normal = np.asarray(fine.direction, float)[:, 2]
    if abs(float(fine_normal @ normal)) < 0.999:
        raise RuntimeError("run-eclare returned another slice direction")
    array = rebin_slices(fine.array, _slice_edges(fine, normal), _slice_edges(grid, normal))
    return EclareResult(array=array, seconds=seconds, patches=int(patches), device="cuda" if gpu else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.evaluation.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install ECLARE into its own virtual environment")
    inst.add_argument("--folder", type=Path, default=PEERS)
    args = parser.parse_args(argv)
    if args.command == "install":
        print(f"ECLARE {ECLARE_VERSION}: {install_eclare(args.folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
