"""The one inference path every task uses: device choice, slices/slabs/patches, tiling, progress, cancel.

* ``2d`` models run over the slices along ``slice_axis`` in batches; ``2.5d`` models get ``context_slices``
  neighbours on each side stacked as channels (edge slices repeat at the volume's ends); ``3d`` models run
  over overlapping patches.
* With a ``tile_size``, each slice (or the volume) goes through MONAI's ``sliding_window_inference``: tiles
  overlap and are blended with Gaussian weights, so no seam shows; inputs smaller than a tile are padded with
  the background value, not refused; outputs at a zoomed scale (super-resolution) are stitched by MONAI too.
  Without a tile size, whole slices run at once, padded to the network's ``size_multiple``.
* Results are assembled in host memory batch by batch, so device memory does not grow with the volume. On CUDA,
  batches go up from pinned host memory without blocking and come back into pinned memory one batch behind, so
  the copies overlap the next batch's compute; the default batch size comes from the GPU's free memory and what
  one slice (or tile, or patch) of this model takes, measured once per run.
* CUDA out-of-memory: the batch is halved and retried; at batch size 1 the run moves to the CPU with a warning.
* Precision: ``auto`` runs bf16 (autocast) only where the model's card says its outputs were checked in bf16
  (``"mixed_precision": "bf16"``) and the device computes bf16 natively (a CUDA GPU with bf16, a CPU with
  AVX512-BF16 or AMX); everything else runs fp32. ``fp32`` always runs fp32; ``bf16`` forces bf16 (emulated,
  slowly, on CPUs without it). Instance norm over a nearly empty slice amplifies bf16 rounding into visible
  errors, which is why a model is not run in bf16 unless its card says so.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from .errors import CancelledError, MedGANError

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class InferenceLayout:
    """How a network walks a volume: from the model card (see :mod:`MedGANLogic.models.card`)."""

    dims: str = "2d"  # "2d" | "2.5d" | "3d"
    slice_axis: int = 0  # array axis (0 = z, axial) that 2d/2.5d models slice along
    context_slices: int = 0  # neighbours on each side for 2.5d
    tile_size: tuple[int, ...] = ()  # in-plane tile (2d) or patch (3d); () = whole slices
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # output/input voxel ratio along (z, y, x)
    pad_value: float = -1.0  # background in the normalised range
    mixed_precision: str = "none"  # "bf16": the card says its outputs were checked in bf16 (see PRECISIONS)

    @classmethod
    def from_card(cls, card: Any, slice_axis: int | None = None) -> InferenceLayout:
        norm = card.input.get("normalization", {})
        axis = card.slice_axis if slice_axis is None else int(slice_axis)
        return cls(dims=card.dims, slice_axis=axis, context_slices=card.context_slices,
                   tile_size=tuple(card.tile_size), scale=card.scale_factor,
                   pad_value=float(norm.get("range", [-1.0, 1.0])[0]) if norm.get("kind") != "none" else 0.0,
                   mixed_precision=str(card.data.get("mixed_precision", "none")))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise MedGANError(f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MedGANError(f"Device {device!r} asked for, but no CUDA GPU is usable here (torch "
                              f"{torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu or auto.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MedGANError(f"Device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                              f"CUDA GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif dev.type not in ("cpu", "mps"):
        raise MedGANError(f"Unsupported device {device!r}: use auto, cpu, cuda or cuda:N.")
    return dev


def default_batch_size(layout: InferenceLayout, device: torch.device, plane: tuple[int, ...] = (256, 256)) -> int:
    """Slices (or patches) per forward pass on a CPU or MPS (on CUDA, :meth:`_Runner.cuda_batch_size` measures it).

    On a CPU, activations of a large batch fall out of the caches and convolutions get slower per slice: with the
    shipped models one slice of 128 x 128 or more per pass is fastest (benchmarks/peers.py, RESULTS.md), so a
    batch holds about 128 x 128 input pixels; GPUs want big batches.
    """
    if layout.dims == "3d":
        return 1 if device.type == "cpu" else 4
    area = int(np.prod(layout.tile_size or plane))
    if device.type == "cpu":
        return int(max(1, min(16, 16384 // max(area, 1))))
    return int(max(4, min(64, 32 * 65536 // max(area, 1))))


def batch_from_free_memory(item_bytes: int, free_bytes: int, fraction: float = 0.6, cap: int = 64) -> int:
    """Items per pass so that their activations (``item_bytes`` each, measured) fill ``fraction`` of the free
    device memory, at most ``cap`` (beyond that a GPU gains nothing) and at least 1."""
    return int(max(1, min(cap, int(fraction * free_bytes) // max(int(item_bytes), 1))))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _fallback_allowed(device: torch.device) -> bool:
    return device.type != "cpu"


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (so bf16 is faster there, not just emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # an older torch without these probes: assume not
            return False
    return False


def choose_precision(precision: str, device: torch.device, layout: InferenceLayout) -> str:
    """``fp32`` or ``bf16``: what a run with ``precision`` (auto | fp32 | bf16) computes in on ``device``."""
    if precision not in PRECISIONS:
        raise MedGANError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return "fp32"
    if precision == "bf16":
        if layout.mixed_precision != "bf16":
            warnings.warn("bf16 forced on a model whose card does not say its outputs were checked in bf16: "
                          "compare with a --precision fp32 run before trusting it.", RuntimeWarning, stacklevel=3)
        return "bf16"
    return "bf16" if layout.mixed_precision == "bf16" and native_bf16(device) else "fp32"


@contextmanager
def _amp_context(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast, or plain fp32 (autocast off, also under a caller's autocast). On CUDA, fp32 means IEEE fp32:
    TF32, PyTorch's default for cuDNN convolutions, is turned off while the network runs and the process-wide flags
    are put back afterwards. With TF32 on an H200, batch sizes changed outputs by 1e-3 and ct-to-mr's differed from
    the CPU's by 41 HU at the 99.9th percentile (Testing/Python/test_cuda.py)."""
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        with torch.autocast(device_type="cpu", enabled=False):
            yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type="cuda", enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def tile_margins(tile: tuple[int, ...], overlap: float) -> tuple[int, ...]:
    """Untrusted border of a tile, per axis: half of what neighbouring tiles share."""
    return tuple((t - max(int(t * (1 - overlap)), 1)) // 2 for t in tile)


def tile_weights(tile: tuple[int, ...], overlap: float, device: torch.device) -> torch.Tensor:
    """Blending weights of one tile: a Gaussian (sigma = tile/4) that is ~0 (1e-10) in a margin at the tile's edges.

    A tile's outer voxels were computed next to artificial zero padding, so they are the least trustworthy. The
    margin, ``(tile - step) // 2`` voxels wide, is as wide as the overlap allows while the trusted interiors of
    neighbouring tiles still meet, so every voxel away from the volume's border is taken from tiles that saw its
    whole neighbourhood: for a network whose receptive field fits in the margin the result equals whole-image
    inference; for larger ones the Gaussian hides the seams.
    """
    axes = []
    for t, margin in zip(tile, tile_margins(tile, overlap)):
        x = torch.arange(t, dtype=torch.float32) - (t - 1) / 2
        w = torch.exp(-0.5 * (x / (t / 4.0)) ** 2)
        w = w / w.max()
        if margin:
            w[:margin] = 1e-10
            w[t - margin:] = 1e-10
        axes.append(w)
    weights = axes[0]
    for w in axes[1:]:
        weights = weights[..., None] * w
    return weights.clamp_(min=1e-10).to(device)


class _Runner:
    """Holds the network and device; runs one batch, shrinking the batch or moving to CPU on OOM."""

    def __init__(self, net: nn.Module, device: torch.device, layout: InferenceLayout, overlap: float, precision: str,
                 cpu_fallback: Callable[[], nn.Module] | None):
        self.net, self.device, self.layout = net, device, layout
        self.overlap, self.requested, self.cpu_fallback = overlap, precision, cpu_fallback
        self.precision = choose_precision(precision, device, layout)
        self.size_multiple = int(getattr(net, "size_multiple", 1))
        # Channels-last lets oneDNN (CPU) and cuDNN (tensor cores) pick their fastest convolution kernels. On a CPU,
        # instance norm computes on NCHW and copies channels-last activations twice per layer: slower overall.
        self.memory_format = torch.channels_last if layout.dims != "3d" else torch.channels_last_3d
        if device.type == "cpu" and any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in net.modules()):
            self.memory_format = torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with _amp_context(self.device, self.precision):
            y = self.net(x.contiguous(memory_format=self.memory_format))
        return y.float()

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        # Pad to the network's size multiple with background, run, crop the (possibly zoomed) output.
        spatial = x.shape[2:]
        m = self.size_multiple
        pads = [(-s) % m for s in spatial]
        if any(pads):
            flat = []
            for p in reversed(pads):
                flat += [0, p]
            x = F.pad(x, flat, value=self.layout.pad_value)
        y = self._forward(x)
        zoom = [yo / xi for yo, xi in zip(y.shape[2:], x.shape[2:])]
        return y[(slice(None), slice(None)) + tuple(slice(0, round(s * z)) for s, z in zip(spatial, zoom))]

    def item_bytes(self, item_shape: tuple[int, ...], channels: int) -> int:
        """Device memory one item (slice, tile or patch) takes in a forward pass: measured on a blank item (CUDA)."""
        m = self.size_multiple
        shape = (1, channels) + tuple(s + (-s) % m for s in item_shape)
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode():
            self._forward(torch.full(shape, self.layout.pad_value, device=self.device))
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - base)

    def cuda_batch_size(self, item_shape: tuple[int, ...], channels: int) -> int:
        used = self.item_bytes(item_shape, channels)
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return batch_from_free_memory(used, free + cached)

    def run(self, batch: np.ndarray, sw_batch_size: int) -> np.ndarray:
        return self.fetch(self.submit(batch, sw_batch_size))

    def submit(self, batch: np.ndarray, sw_batch_size: int) -> Any:
        """Queue one batch; returns a handle for :meth:`fetch`. On CUDA nothing here waits for the GPU."""
        if self.device.type == "cuda":  # pinned host memory: the upload runs asynchronously
            host = torch.empty(batch.shape, dtype=torch.float32, pin_memory=True)
            host.numpy()[...] = batch
            x = host.to(self.device, non_blocking=True)
        else:
            x = torch.from_numpy(batch).to(self.device)
        y = self._compute(x, sw_batch_size)
        if self.device.type != "cuda":
            return y, None
        back = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
        back.copy_(y, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        return back, done

    @staticmethod
    def fetch(handle: Any) -> np.ndarray:
        """The batch's result in host memory, waiting for its download if it is still under way."""
        y, done = handle
        if done is not None:
            done.synchronize()
        return y.float().cpu().numpy()

    def _compute(self, x: torch.Tensor, sw_batch_size: int) -> torch.Tensor:
        with torch.inference_mode():
            if self.layout.tile_size:
                # Pad by the tile margin so the volume's own border voxels lie in some tile's trusted interior.
                margins = tile_margins(self.layout.tile_size, self.overlap)
                flat: list[int] = []
                for m in reversed(margins):
                    flat += [m, m]
                x = F.pad(x, flat, value=self.layout.pad_value)
                y = sliding_window_inference(
                    x, roi_size=self.layout.tile_size, sw_batch_size=sw_batch_size, predictor=self._forward,
                    overlap=self.overlap, mode="gaussian", padding_mode="constant", cval=self.layout.pad_value,
                    roi_weight_map=tile_weights(self.layout.tile_size, self.overlap, self.device),
                    sw_device=self.device, device=torch.device("cpu") if self.layout.dims == "3d" else self.device)
                zoom = [yo / xi for yo, xi in zip(y.shape[2:], x.shape[2:])]
                y = y[(slice(None), slice(None)) + tuple(slice(round(m * z), y.shape[2 + i] - round(m * z))
                                                         for i, (m, z) in enumerate(zip(margins, zoom)))]
            else:
                y = self._whole(x)
        return y.float()

    def on_oom(self, exc: BaseException, batch_size: int) -> int:
        """Decide what to do after an out-of-memory error: a smaller batch, the CPU, or give up."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch_size > 1:
            log.warning("Out of memory at batch size %d on %s; retrying with %d.", batch_size, self.device,
                        batch_size // 2)
            return batch_size // 2
        if _fallback_allowed(self.device):
            warnings.warn(f"Out of memory on {self.device} even at batch size 1; continuing on the CPU (slower).",
                          RuntimeWarning, stacklevel=3)
            self.net = self.cpu_fallback() if self.cpu_fallback else self.net.to("cpu")
            self.device = torch.device("cpu")
            self.precision = choose_precision(self.requested, self.device, self.layout)
            return 1
        raise MedGANError("Out of memory even at batch size 1 on the CPU: the volume or tile is too large for this "
                          "machine; crop the volume or use a model with a smaller tile.") from exc


def infer(net: nn.Module, array: np.ndarray, layout: InferenceLayout, *, device: torch.device | str = "cpu",
          batch_size: int | None = None, overlap: float = 0.25, progress: ProgressFn | None = None,
          cancel: Any = None, precision: str = "auto",
          cpu_fallback: Callable[[], nn.Module] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``net`` over a normalised volume.

    Args:
        net: the network, already on ``device`` and in eval mode.
        array: normalised input, shape (z, y, x), float32.
        layout: how to walk the volume (dims, slice axis, context, tile, scale).
        batch_size: slices (2d/2.5d) or patches (3d) per forward pass; default chosen per device.
        overlap: fraction of a tile shared with its neighbour (tiled models only).
        progress: ``progress(fraction, message)``, called after every batch.
        cancel: callable returning True (or an object with ``is_set()``) to stop; checked between batches.
        precision: ``auto`` (bf16 where the card allows it and the device has it natively), ``fp32`` or ``bf16``.
        cpu_fallback: returns a CPU copy of the network, used if CUDA runs out of memory at batch size 1.

    Returns:
        (output of shape (channels, z', y', x') in the network's output range, run info: device, batch size,
        precision).
    """
    if not 0.0 <= overlap < 1.0:
        raise MedGANError(f"overlap must be in [0, 1); got {overlap}.")
    device = resolve_device(device)
    runner = _Runner(net, device, layout, overlap, precision, cpu_fallback)
    plane = tuple(n for a, n in enumerate(array.shape) if a != layout.slice_axis)
    if not batch_size:  # CUDA measures what one item takes; CPU and MPS use a fixed rule
        item = tuple(layout.tile_size) or (array.shape if layout.dims == "3d" else plane)
        batch_size = (runner.cuda_batch_size(item, 1 if layout.dims == "3d" else 1 + 2 * layout.context_slices)
                      if device.type == "cuda" else default_batch_size(layout, device, plane))
    bs = int(batch_size)
    if bs < 1:
        raise MedGANError(f"batch_size must be at least 1; got {batch_size}.")
    start = time.perf_counter()
    report = progress or (lambda f, m: None)
    if layout.dims == "3d":
        out = _infer_3d(runner, array, bs, report, cancel)
    else:
        out = _infer_slices(runner, array, layout, bs, report, cancel)
    info = {"device": str(runner.device), "batch_size": bs, "precision": runner.precision,
            "seconds": round(time.perf_counter() - start, 3)}
    return out, info


def _infer_slices(runner: _Runner, array: np.ndarray, layout: InferenceLayout, batch_size: int,
                  report: ProgressFn, cancel: Any) -> np.ndarray:
    axis, ctx = layout.slice_axis, layout.context_slices
    slices = np.moveaxis(array, axis, 0)  # a view: (S, H, W)
    n = slices.shape[0]
    if ctx:
        slices = np.pad(slices, ((ctx, ctx), (0, 0), (0, 0)), mode="edge")
    # (S, 2*ctx+1, H, W) view: slab j holds slices j-ctx .. j+ctx of the original volume
    slabs = np.lib.stride_tricks.sliding_window_view(slices, 2 * ctx + 1, axis=0).transpose(0, 3, 1, 2)
    out: np.ndarray | None = None
    pending: tuple[int, int, Any] | None = None  # (first slice, count, handle): the batch still coming back
    done = 0

    def take(first: int, count: int, handle: Any) -> None:
        nonlocal out, done
        y = runner.fetch(handle)
        if out is None:
            out = np.empty((y.shape[1], n) + y.shape[2:], dtype=np.float32)
        out[:, first:first + count] = y.transpose(1, 0, 2, 3)
        done = first + count
        report(done / n, f"{done}/{n} slices")

    i = 0
    report(0.0, f"0/{n} slices")
    while i < n:
        if _is_cancelled(cancel):
            raise CancelledError("Cancelled by the user; nothing was written.")
        b = min(batch_size, n - i)
        try:
            handle = runner.submit(np.array(slabs[i:i + b], dtype=np.float32), batch_size)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc):
                raise
            batch_size = runner.on_oom(exc, b)
            continue
        if pending is not None:  # the previous batch came back while this one was queued
            take(*pending)
        pending = (i, b, handle)
        i += b
    if pending is not None:
        take(*pending)
    assert out is not None
    return np.moveaxis(out, 1, axis + 1)


def _count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    total = 1
    for s, r in zip(shape, roi):
        if s <= r:
            continue
        step = max(int(r * (1 - overlap)), 1)
        total *= math.ceil((s - r) / step) + 1
    return total


def _infer_3d(runner: _Runner, array: np.ndarray, batch_size: int, report: ProgressFn, cancel: Any) -> np.ndarray:
    if not runner.layout.tile_size:
        raise MedGANError("3d models need a tile_size (patch size) in their card.")
    total = _count_windows(array.shape, runner.layout.tile_size, runner.overlap)
    forward = runner._forward
    done = [0]

    def predictor(x: torch.Tensor) -> torch.Tensor:  # called by MONAI for each batch of patches
        if _is_cancelled(cancel):
            raise CancelledError("Cancelled by the user; nothing was written.")
        y = forward(x)
        done[0] += x.shape[0]
        report(min(done[0] / total, 1.0), f"{min(done[0], total)}/{total} patches")
        return y

    runner._forward = predictor  # type: ignore[method-assign]
    report(0.0, f"0/{total} patches")
    x = np.ascontiguousarray(array[None, None], dtype=np.float32)
    while True:
        done[0] = 0
        try:
            y = runner.run(x, batch_size)
            break
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc):
                raise
            batch_size = runner.on_oom(exc, batch_size)
    return y[0]
