"""Engine vs a naive loop: a 256x256x160 volume through a small 2D conv net on this machine.

    python benchmarks/inference.py [--slices 160] [--device cpu]

Prints a table (seconds, peak extra resident memory) and the engine/naive ratios measured in the same
process; writes benchmarks/inference.json. The two paths must agree (max abs difference is reported).
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import measure, save, table  # noqa: E402

from MedGANLogic.inference import InferenceLayout, infer, resolve_device  # noqa: E402
from MedGANLogic.models.simple import SmallConvNet  # noqa: E402


def naive_loop(net: torch.nn.Module, vol: np.ndarray, device: torch.device) -> np.ndarray:
    """What a first script does: one slice at a time, fp32, a new array per slice, stacked at the end."""
    out = []
    with torch.no_grad():
        for k in range(vol.shape[0]):
            x = torch.from_numpy(vol[k].copy())[None, None].to(device)
            out.append(net(x)[0, 0].cpu().numpy())
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=160)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = SmallConvNet(spatial_dims=2, features=16, depth=3).eval().to(device)
    rng = np.random.default_rng(0)
    vol = np.tanh(rng.normal(size=(args.slices, args.size, args.size))).astype(np.float32)
    volume_mb = vol.nbytes / 1e6

    plain = copy.deepcopy(net)  # the engine converts its network to channels-last; the naive loop keeps fp32 NCHW
    naive = measure(lambda: naive_loop(plain, vol, device), args.repeats)
    engine = measure(lambda: infer(net, vol, InferenceLayout(), device=device)[0][0], args.repeats)
    tiled = measure(lambda: infer(net, vol, InferenceLayout(tile_size=(128, 128)), device=device)[0][0],
                    args.repeats)
    rows = []
    for name, m in (("naive loop (1 slice, fp32)", naive), ("engine, whole slices", engine),
                    ("engine, 128x128 tiles", tiled)):
        diff = float(np.abs(m["result"] - naive["result"])[:, 4:-4, 4:-4].max())  # tiles pad borders differently
        rows.append({"path": name, "seconds": f"{m['seconds']:.3f}",
                     "speed-up vs naive": f"{naive['seconds'] / m['seconds']:.2f}x",
                     "peak extra MB": f"{m['peak_extra_bytes'] / 1e6:.0f}",
                     "peak / volume": f"{m['peak_extra_bytes'] / 1e6 / volume_mb:.2f}",
                     "max |diff| vs naive (interior)": f"{diff:.2e}"})
    print(f"Volume {args.slices}x{args.size}x{args.size} float32 ({volume_mb:.0f} MB), SmallConvNet "
          f"(16 features, 3 layers), device {device}, best of {args.repeats}")
    print(table(rows, list(rows[0])))
    path = save("inference", {"volume_shape": [args.slices, args.size, args.size], "device": str(device),
                              "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
