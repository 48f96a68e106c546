"""Pictures of the 3D Slicer side, made without the Slicer application; the tests check them and the README
shows them.

    python Testing/Python/slicer_figures.py overlay Testing/Reports/anomaly_overlay.png
    python Testing/Python/slicer_figures.py panel Resources/Screenshots/panel.png

* ``overlay``: the anomaly map shown as Slicer shows it: ``slicer_bridge.run_on_node`` on a real MRML scene, then
  the Red slice view's blended background (the scan) and foreground (the map, perceptual colour table, opacity,
  lower threshold) rendered by ``vtkMRMLSliceLogic``, with the ground-truth lesion outline and a colour legend.
  The anomaly model is the analytic local-mean model of :mod:`slicer_testing` (reconstruction = local mean), the
  scan the lesion phantom there.
* ``panel``: ``Resources/UI/MedGAN.ui`` rendered offscreen with PySide6. Slicer's CTK/qMRML widgets are not
  available outside the application, so for this picture only each is registered as a plain Qt stand-in of
  the same look (a combo box for node selectors, a group box for collapsible sections, a slider for sliders).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))


# --- anomaly overlay --------------------------------------------------------------------------------------------------
@dataclass
class OverlayRender:
    """Screen images of one slice view (H, W, ...) and what the test compares."""

    background: np.ndarray  # RGB of the scan alone
    blended: np.ndarray  # RGB of the scan with the anomaly map as foreground
    truth: np.ndarray  # bool: ground-truth lesion pixels, resliced exactly like the scan
    mm_per_pixel: float
    threshold: float
    upper: float
    case_score: float
    colors: np.ndarray  # (N, 3) float RGB of the colour table used


def install_analytic_anomaly_model(models_dir: Path) -> str:
    """Write the analytic local-mean anomaly model into ``models_dir``; returns its id."""
    import torch
    from slicer_testing import anomaly_card, local_mean_anomaly_state

    from MedGANLogic.models.registry import save_model

    card = anomaly_card()
    save_model(Path(models_dir) / card["id"], card, local_mean_anomaly_state(), dtype=torch.float32)
    return card["id"]


def render_overlay(model: str | None = None, opacity: float = 0.6, size: int = 320) -> OverlayRender:
    """Run the anomaly task through slicer_bridge on the lesion phantom and render the Red view at the lesion."""
    from slicer_testing import make_scene

    setup = make_scene()
    try:
        return _render_overlay(setup, model, opacity, size)
    finally:
        setup.close()


def _render_overlay(setup, model: str | None, opacity: float, size: int) -> OverlayRender:
    from slicer_testing import add_volume_node, lesion_phantom, render_slice

    from MedGANLogic import slicer_bridge

    for logic in setup.slice_logics.values():
        logic.GetSliceNode().SetDimensions(size, size, 1)
    volume, lesion = lesion_phantom()
    scan = add_volume_node(setup.scene, volume, "T2w phantom")
    amap = slicer_bridge.run_on_node(setup.scene, scan, "anomaly", model=model, opacity=opacity)[0]
    truth_node = add_volume_node(setup.scene, volume.with_array(lesion.astype(np.float32)), "lesion truth",
                                 study=None, modality="mask")
    truth_display = truth_node.GetDisplayNode()
    truth_display.AutoWindowLevelOff()
    truth_display.SetWindowLevelMinMax(0.0, 1.0)
    truth_display.SetInterpolate(0)
    scan_display = scan.GetDisplayNode()
    scan_display.SetInterpolate(1)
    centre = np.argwhere(lesion).mean(axis=0)[::-1]  # (i, j, k)
    ras = (volume.ijk_to_ras() @ [*centre, 1.0])[:3]
    background = render_slice(setup, "Red", scan, None, 0.0, ras, zoom=1.4)
    blended = render_slice(setup, "Red", scan, amap, opacity, ras, zoom=1.4)
    truth = render_slice(setup, "Red", truth_node, None, 0.0, ras, zoom=1.4)[..., 0] > 127
    slice_node = setup.slice_logics["Red"].GetSliceNode()
    mm_per_pixel = float(slice_node.GetFieldOfView()[0]) / float(slice_node.GetDimensions()[0])
    display = amap.GetDisplayNode()
    color_node = display.GetColorNode()
    colors = []
    for i in range(color_node.GetNumberOfColors()):
        rgba = [0.0, 0.0, 0.0, 0.0]
        color_node.GetColor(i, rgba)
        colors.append(rgba[:3])
    return OverlayRender(background=background, blended=blended, truth=truth, mm_per_pixel=mm_per_pixel,
                         threshold=float(display.GetLowerThreshold()), upper=float(display.GetWindowLevelMax()),
                         case_score=float(amap.GetAttribute("MedGAN.case_score")), colors=np.array(colors))


def colored_pixels(rgb: np.ndarray, min_chroma: int = 30) -> np.ndarray:
    """Pixels whose colour is not a grey level: where the colour-mapped foreground shows through."""
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) >= min_chroma


def overlay_figure(render: OverlayRender, path: Path) -> Path:
    """Compose "scan | scan + anomaly map | + ground-truth outline" with a colour legend into a PNG."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w, _ = render.blended.shape
    outline = render.truth & ~ndimage.binary_erosion(render.truth, iterations=2)
    with_truth = render.blended.copy()
    with_truth[outline] = (0, 255, 255)
    legend_w, title_h, pad = 130, 28, 8
    canvas = Image.new("RGB", (3 * w + 4 * pad + legend_w, h + title_h + pad + 26), (24, 24, 24))
    font = _font(15)
    small = _font(12)
    draw = ImageDraw.Draw(canvas)
    titles = ("T2w scan (Red slice view)", "MedGAN anomaly map (Inferno)", "+ ground-truth lesion (cyan)")
    for n, (image, title) in enumerate(zip((render.background, render.blended, with_truth), titles)):
        x = pad + n * (w + pad)
        canvas.paste(Image.fromarray(image), (x, title_h))
        draw.text((x + 2, 6), title, fill=(235, 235, 235), font=font)
    # colour legend: the display's window [0, upper] through the colour table; values below threshold hidden
    x0, y0, bar_w, bar_h = 3 * (w + pad) + pad + 8, title_h + 10, 22, h - 40
    n_colors = len(render.colors)
    for y in range(bar_h):
        value = render.upper * (1.0 - y / (bar_h - 1))
        index = int(round(value / render.upper * (n_colors - 1)))
        rgb = tuple(int(round(c * 255)) for c in render.colors[index])
        if value < render.threshold:
            rgb = tuple(int(c * 0.25 + 40) for c in rgb)
        draw.line([(x0, y0 + y), (x0 + bar_w, y0 + y)], fill=rgb)
    draw.rectangle([x0, y0, x0 + bar_w, y0 + bar_h], outline=(200, 200, 200))
    for value in (0.0, render.threshold, render.upper):
        y = y0 + int(round((1.0 - value / render.upper) * (bar_h - 1)))
        draw.line([(x0 + bar_w, y), (x0 + bar_w + 5, y)], fill=(220, 220, 220))
        label = f"{value:.3f} threshold" if value == render.threshold else f"{value:.2f}"
        draw.text((x0 + bar_w + 8, y - 7), label, fill=(220, 220, 220), font=small)
    draw.text((x0 - 4, title_h - 12), "residual", fill=(220, 220, 220), font=small)
    footer = (f"vtkMRMLSliceLogic render of slicer_bridge.run_on_node(scene, scan, 'anomaly'): opacity 0.6, shown "
              f"above threshold {render.threshold:.3f}; case score {render.case_score:.3f}. Analytic local-mean test "
              f"model on a lesion phantom.")
    draw.text((pad, h + title_h + 8), footer, fill=(180, 180, 180), font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def make_overlay_png(path: Path) -> OverlayRender:
    """Install the analytic model in a temporary folder, render, and write the figure to ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        old = {k: os.environ.get(k) for k in ("MEDGAN_MODELS_DIR", "MEDGAN_BUILTIN_MODELS")}
        os.environ["MEDGAN_MODELS_DIR"] = str(Path(tmp) / "models")
        os.environ["MEDGAN_BUILTIN_MODELS"] = str(Path(tmp) / "none")
        try:
            model = install_analytic_anomaly_model(Path(tmp) / "models")
            render = render_overlay(model)
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    overlay_figure(render, path)
    return render


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("overlay", "panel"):
        print(__doc__)
        return 2
    what, path = argv
    if what == "overlay":
        make_overlay_png(Path(path))
    else:
        from slicer_panel import render_panel

        render_panel(Path(path))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
