"""Reference implementations the engine is checked against (tests) and timed against (benchmarks/peers.py).

Plain code, written the way a first script would be: slow on purpose and obviously right. Imports numpy, torch
and the engine's ``InferenceLayout`` only (no pytest), so the benchmark scripts can import it too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from MedGANLogic.inference import InferenceLayout


def naive_loop(net: torch.nn.Module, array: np.ndarray, layout: InferenceLayout,
               device: torch.device | str = "cpu") -> np.ndarray:
    """The plain path: one slice (with its 2.5d neighbours, edges repeated) per forward pass, fp32, NCHW.

    ``array`` is the normalised (z, y, x) volume; each slice is padded with ``layout.pad_value`` to the network's
    ``size_multiple`` and its output cropped back (times the network's scale). Returns (C, z', y', x').
    """
    slices = np.moveaxis(array, layout.slice_axis, 0)
    n, ctx = slices.shape[0], layout.context_slices
    m = int(getattr(net, "size_multiple", 1))
    out = []
    with torch.no_grad():
        for k in range(n):
            index = np.clip(np.arange(k - ctx, k + ctx + 1), 0, n - 1)
            x = torch.from_numpy(slices[index].copy())[None].to(device)
            h, w = x.shape[2:]
            x = F.pad(x, (0, (-w) % m, 0, (-h) % m), value=layout.pad_value)
            y = net(x)
            zh, zw = y.shape[2] / x.shape[2], y.shape[3] / x.shape[3]
            out.append(y[0, :, :round(h * zh), :round(w * zw)].float().cpu().numpy())
    return np.moveaxis(np.stack(out, axis=1), 1, layout.slice_axis + 1)
