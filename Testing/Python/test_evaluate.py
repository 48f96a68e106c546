"""The evaluation: metrics give the textbook values, baselines do what they claim, the report is generated from
the section results (targets met or missed are stated), and missing models are reported, not hidden."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedGANLogic import evaluate as ev


def _phantom(shape=(6, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    mask = (y - 20) ** 2 + (x - 20) ** 2 < 15 ** 2
    image = np.where(mask, 100 + 50 * np.sin(x / 3.0) + 30 * np.cos(y / 4.0), 0).astype(np.float32)
    return image, mask


def test_psnr_and_mae_follow_their_definitions_inside_the_mask():
    target, mask = _phantom()
    pred = target + 4.0
    pred[~mask] += 1000  # outside the head: ignored
    assert ev.mae(pred, target, mask) == pytest.approx(4.0)
    assert ev.psnr(pred, target, mask, data_range=400.0) == pytest.approx(20 * np.log10(400 / 4.0), abs=1e-3)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    target, mask = _phantom()
    assert ev.ssim(target, target, mask, data_range=200.0) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = target + rng.normal(0, 10, target.shape).astype(np.float32)
    noisier = target + rng.normal(0, 30, target.shape).astype(np.float32)
    s1, s2 = ev.ssim(noisy, target, mask, 200.0), ev.ssim(noisier, target, mask, 200.0)
    assert 0 < s2 < s1 < 1


def test_head_mask_fills_the_skull():
    ct = np.full((2, 30, 30), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[0:30, 0:30]
    ring = np.abs(np.hypot(yy - 15, xx - 15) - 10) < 1.5
    ct[:, ring] = 1000.0  # bone ring; inside stays air-like (-1000) but is head
    mask = ev.head_mask(ct)
    assert mask[:, 15, 15].all() and not mask[:, 0, 0].any()


def test_histogram_matching_takes_the_reference_distribution():
    rng = np.random.default_rng(1)
    source, mask = _phantom()
    reference = rng.normal(500, 50, source.shape).astype(np.float32)
    out = ev.histogram_matching(source, mask, reference, mask)
    assert np.median(out[mask]) == pytest.approx(np.median(reference[mask]), rel=0.02)
    assert np.all(out[~mask] == 0)
    order = np.argsort(source[mask])  # monotonic: brighter stays brighter
    assert np.all(np.diff(out[mask][order]) >= -1e-3)


def test_threshold_mapping_learns_class_values():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (4, 20, 20))
    levels = np.array([10.0, 40.0, 70.0, 100.0])
    values = np.array([-1000.0, 20.0, 40.0, 900.0])
    source = (levels[labels] + rng.uniform(-3, 3, labels.shape)).astype(np.float32)
    target = values[labels].astype(np.float32)
    mask = np.ones(labels.shape, bool)
    mapping = ev.ThresholdMapping(classes=4, mr_source=False).fit([source], [target], [mask])
    pred = mapping.predict(source, mask, background=-1000.0)
    assert np.abs(pred - target).mean() < 0.1 * np.abs(target.mean() - target).mean()
    assert np.all(np.diff(mapping.values) > 0)  # brighter source class, higher value here


def test_nlm_reduces_noise():
    rng = np.random.default_rng(3)
    clean, mask = _phantom((2, 40, 40))
    noisy = clean + rng.normal(0, 15, clean.shape).astype(np.float32)
    den = ev.nlm_denoise(noisy, 15.0)
    assert ev.mae(den, clean, mask) < 0.7 * ev.mae(noisy, clean, mask)


def test_report_states_met_and_missed_targets(tmp_path, monkeypatch):
    def fake(ctx):
        return ev.SectionResult(
            title="fake section", intro="A fake.", units={"PSNR": "dB"},
            metrics={"model": {"PSNR": [30.0, 32.0]}, "baseline": {"PSNR": [25.0, 27.0]}},
            targets=[ev.Target("fake: PSNR above baseline", 31.0, 26.0),
                     ev.Target("fake: PSNR above 40 dB", 31.0, 40.0, note_if_missed="the fake is too small")])

    monkeypatch.setitem(ev.SECTIONS, "fake", fake)
    data = ev.evaluate(tmp_path, sections=["fake"])
    md = (tmp_path / "evaluation.md").read_text()
    assert "**1 of 2 targets met**" in md
    assert "| fake: PSNR above 40 dB | 31 | > 40 | **MISSED** |" in md
    assert "the fake is too small" in md
    assert "| model | 31.00 ± 1.00 |" in md
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["targets_met"] == data["targets_met"] == 1
    assert saved["sections"]["fake"]["metrics"]["model"]["PSNR"]["per_subject"] == [30.0, 32.0]


def test_missing_models_are_reported_not_hidden(tmp_path, model_dir):
    ev.evaluate(tmp_path, sections=["mr-t1-to-t2", "ldct-denoise"])
    md = (tmp_path / "evaluation.md").read_text()
    assert md.count("**Not evaluated**: model(s) not installed") == 2
    with pytest.raises(ValueError, match="Unknown section"):
        ev.evaluate(tmp_path, sections=["nope"])
