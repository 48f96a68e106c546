"""The anomaly overlay as 3D Slicer draws it: vtkMRMLSliceLogic blends the scan (background) and the anomaly map
(foreground, colour table, opacity, lower threshold); the coloured pixels must lie on the lesion and nowhere else.

The anomaly model is analytic (reconstruction = local mean; see ``slicer_testing.local_mean_anomaly_state``), the
scan a phantom with one lesion whose ground-truth mask is resliced through the same slice view for comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from slicer_figures import colored_pixels, install_analytic_anomaly_model, overlay_figure, render_overlay

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    import os

    from MedGANLogic.models import registry

    tmp = tmp_path_factory.mktemp("overlay-models")
    saved = {k: os.environ.get(k) for k in ("MEDGAN_MODELS_DIR", "MEDGAN_BUILTIN_MODELS")}
    os.environ["MEDGAN_MODELS_DIR"] = str(tmp / "models")
    os.environ["MEDGAN_BUILTIN_MODELS"] = str(tmp / "none")
    registry.clear_cache()
    try:
        model = install_analytic_anomaly_model(tmp / "models")
        yield render_overlay(model, opacity=0.6)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        registry.clear_cache()


def test_colored_pixels_lie_on_the_lesion_and_not_elsewhere(render):
    colored = colored_pixels(render.blended)
    truth = render.truth
    assert truth.sum() > 200, "the view must cut through the lesion"
    assert not colored_pixels(render.background).any(), "the scan alone is grey: colour comes only from the map"
    # within 2 mm of the lesion (the map is smoothed by 1.5 mm): everything coloured
    near = ndimage.binary_dilation(truth, iterations=max(1, int(round(2.0 / render.mm_per_pixel))))
    assert colored.sum() > 0
    precision = (colored & near).sum() / colored.sum()
    recall = (colored & truth).sum() / truth.sum()
    assert precision > 0.98, f"{1 - precision:.1%} of the coloured pixels are off the lesion"
    assert recall > 0.85, f"only {recall:.1%} of the lesion is coloured"
    far = ~ndimage.binary_dilation(truth, iterations=int(round(6.0 / render.mm_per_pixel)))
    assert not (colored & far).any()


def test_overlay_uses_the_colour_table_opacity_and_threshold(render):
    colored = colored_pixels(render.blended)
    # blended = (1 - opacity) * scan + opacity * colour: the scan shows through the coloured pixels
    scan = render.background[colored].astype(float)
    mixed = render.blended[colored].astype(float)
    colour = (mixed - 0.4 * scan) / 0.6
    assert np.all(colour > -12) and np.all(colour < 267)  # a valid colour, i.e. opacity 0.6 was applied
    table = np.asarray(render.colors) * 255
    nearest = np.min(np.linalg.norm(colour[:, None, :] - table[None, ::8, :], axis=-1), axis=1)
    assert np.median(nearest) < 25  # the colours come from the (Inferno) table
    assert render.threshold == pytest.approx(0.095) and render.upper > render.threshold


def test_committed_overlay_report_exists_and_figure_is_written(render, tmp_path):
    from PIL import Image

    committed = REPO / "Testing" / "Reports" / "anomaly_overlay.png"
    assert committed.is_file(), "make it: python Testing/Python/slicer_figures.py overlay " + str(committed)
    with Image.open(committed) as image:
        assert image.format == "PNG" and image.width > 3 * render.blended.shape[1]
    path = overlay_figure(render, tmp_path / "overlay.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert colored_pixels(pixels).sum() > render.truth.sum()  # the map, the outline and the legend are drawn


def test_shipped_anomaly_overlay_marks_the_sample_lesions(monkeypatch):
    """The committed figure's setting: the shipped anomaly model on the sample subject's T2w (held-out phantom,
    oblique grid), rendered by vtkMRMLSliceLogic through the lesions' largest cross-section. The demo model also marks
    some bright CSF (see the evaluation report), so this checks what it does do: the coloured pixels crowd onto
    the lesions, many times more than if they were spread over the head at random, and cover part of them."""
    from slicer_figures import SHIPPED_ANOMALY_MODEL, sample_lesion_case

    from MedGANLogic.models import registry

    monkeypatch.delenv("MEDGAN_BUILTIN_MODELS", raising=False)  # the built-in models, not the analytic one
    registry.clear_cache()
    try:
        render = render_overlay(SHIPPED_ANOMALY_MODEL, case=sample_lesion_case())
    finally:
        monkeypatch.undo()
        registry.clear_cache()
    colored, truth = colored_pixels(render.blended), render.truth
    head = render.background.max(axis=-1) > 20  # the scan's non-air pixels in this view
    assert truth.sum() > 100 and colored.sum() > 0
    near = ndimage.binary_dilation(truth, iterations=max(1, int(round(4.0 / render.mm_per_pixel))))
    precision = (colored & near).sum() / colored.sum()
    chance = (near & head).sum() / head.sum()
    recall = (colored & truth).sum() / truth.sum()
    assert precision > 4 * chance, (precision, chance)
    assert recall > 0.1, recall
