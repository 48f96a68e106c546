"""The evaluation: metrics give the textbook values, baselines do what they claim, the report is generated from
the section results (targets met or missed are stated), and missing models are reported, not hidden."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedGANLogic.evaluation import baselines, metrics
from MedGANLogic.evaluation.context import SectionResult, Target, head_mask
from MedGANLogic.evaluation.report import evaluate, merge_sections
from MedGANLogic.evaluation.sections import SECTIONS
from MedGANLogic.registry import Registry


def _phantom(shape=(6, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    mask = (y - 20) ** 2 + (x - 20) ** 2 < 15 ** 2
    image = np.where(mask, 100 + 50 * np.sin(x / 3.0) + 30 * np.cos(y / 4.0), 0).astype(np.float32)
    return image, mask


def test_psnr_and_mae_follow_their_definitions_inside_the_mask():
    target, mask = _phantom()
    pred = target + 4.0
    pred[~mask] += 1000  # outside the head: ignored
    assert metrics.mae(pred, target, mask) == pytest.approx(4.0)
    assert metrics.psnr(pred, target, mask, data_range=400.0) == pytest.approx(20 * np.log10(400 / 4.0), abs=1e-3)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    target, mask = _phantom()
    assert metrics.ssim(target, target, mask, data_range=200.0) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = target + rng.normal(0, 10, target.shape).astype(np.float32)
    noisier = target + rng.normal(0, 30, target.shape).astype(np.float32)
    s1, s2 = metrics.ssim(noisy, target, mask, 200.0), metrics.ssim(noisier, target, mask, 200.0)
    assert 0 < s2 < s1 < 1


def test_head_mask_fills_the_skull():
    ct = np.full((2, 30, 30), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[0:30, 0:30]
    ring = np.abs(np.hypot(yy - 15, xx - 15) - 10) < 1.5
    ct[:, ring] = 1000.0  # bone ring; inside stays air-like (-1000) but is head
    mask = head_mask(ct)
    assert mask[:, 15, 15].all() and not mask[:, 0, 0].any()


def test_histogram_matching_takes_the_reference_distribution():
    rng = np.random.default_rng(1)
    source, mask = _phantom()
    reference = rng.normal(500, 50, source.shape).astype(np.float32)
    out = baselines.histogram_matching(source, mask, reference, mask)
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
    mapping = baselines.ThresholdMapping(classes=4, mr_source=False).fit([source], [target], [mask])
    pred = mapping.predict(source, mask, background=-1000.0)
    assert np.abs(pred - target).mean() < 0.1 * np.abs(target.mean() - target).mean()
    assert np.all(np.diff(mapping.values) > 0)  # brighter source class, higher value here


def test_nlm_reduces_noise():
    rng = np.random.default_rng(3)
    clean, mask = _phantom((2, 40, 40))
    noisy = clean + rng.normal(0, 15, clean.shape).astype(np.float32)
    den = baselines.nlm_denoise(noisy, 15.0)
    assert metrics.mae(den, clean, mask) < 0.7 * metrics.mae(noisy, clean, mask)


def test_report_states_met_and_missed_targets(tmp_path):
    def fake(ctx):
        return SectionResult(
            title="fake section", intro="A fake.", units={"PSNR": "dB"},
            metrics={"model": {"PSNR": [30.0, 32.0]}, "baseline": {"PSNR": [25.0, 27.0]}},
            targets=[Target("fake: PSNR above baseline", 31.0, 26.0),
                     Target("fake: PSNR above 40 dB", 31.0, 40.0, note_if_missed="the fake is too small")])

    registry = Registry("report section")
    registry.add("fake", fake)
    data = evaluate(tmp_path, sections=["fake"], registry=registry)
    md = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    assert "**1 of 2 targets met**" in md
    assert "| fake: PSNR above 40 dB | 31 | > 40 | **MISSED** |" in md
    assert "the fake is too small" in md
    assert "| model | 31.00 ± 1.00 |" in md
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["targets_met"] == data["targets_met"] == 1
    assert saved["sections"]["fake"]["metrics"]["model"]["PSNR"]["per_subject"] == [30.0, 32.0]


def test_missing_models_are_reported_not_hidden(tmp_path, model_dir):
    evaluate(tmp_path, sections=["mr-t1-to-t2", "ldct-denoise"])
    md = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    assert md.count("**Not evaluated**: model(s) not installed") == 2
    with pytest.raises(ValueError, match="Unknown section"):
        evaluate(tmp_path, sections=["nope"])


def test_sections_are_registered_in_report_order():
    assert SECTIONS.names() == ["mr-t1-to-t2", "mr-t2-to-t1", "mr-to-ct", "ct-to-mr", "ldct-denoise",
                                "mr-sr-x2-throughplane", "mr-sr-x2-inplane", "adapt-superres", "adapt-denoise",
                                "brain-anomaly-t2", "brain-lesion-seg", "lesion-augmentation", "lesion-realism"]


def test_unknown_section_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    from MedGANLogic.evaluation.__main__ import main

    report = tmp_path / "report"
    assert main(["--report", str(report), "--sections", "mr-to-ct,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: error: Unknown section(s) nope; known: mr-t1-to-t2,") and "\n" not in err
    assert not report.exists()


def test_dice_counts_the_overlap():
    pred = np.zeros((2, 4, 4), bool)
    truth = np.zeros((2, 4, 4), bool)
    pred[0, 0, :4] = True  # 4 voxels
    truth[0, 0, 1:4] = truth[1, 0, 1:4] = True  # 6 voxels, 3 of them shared with pred
    assert metrics.dice(pred, truth) == pytest.approx(2 * 3 / (4 + 6))
    assert metrics.dice(truth, pred) == metrics.dice(pred, truth)
    assert metrics.dice(truth, truth) == 1.0
    assert metrics.dice(np.zeros_like(truth), truth) == 0.0
    assert metrics.dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0  # nothing to find, nothing found
    with pytest.raises(ValueError, match="same"):
        metrics.dice(pred, truth[:1])


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return np.argwhere(mask & ~binary_erosion(mask))


def test_hd95_of_two_offset_cubes_is_the_offset_in_mm():
    """A cube and the same cube moved 4 voxels along x: every surface point of one lies at most 4 x-voxels from
    the other's surface, and a whole face (24 % of the surface) exactly that far, so HD95 = 4 x 0.5 mm."""
    a = np.zeros((10, 10, 16), bool)
    a[2:8, 2:8, 2:8] = True
    b = np.roll(a, 4, axis=2)
    spacing = (1.0, 1.0, 0.5)  # (z, y, x) mm: only x's spacing may count
    assert metrics.hd95(b, a, spacing) == pytest.approx(2.0)
    assert metrics.hd95(a, b, spacing) == pytest.approx(2.0)
    assert metrics.hd95(a, a, spacing) == 0.0
    assert metrics.hd95(np.zeros_like(a), a, spacing) == float("inf")


def test_hd95_is_the_95th_percentile_of_surface_distances_both_ways():
    from scipy.spatial.distance import cdist

    a = np.zeros((12, 14, 14), bool)
    a[2:7, 3:9, 2:10] = True
    b = np.zeros_like(a)
    b[4:10, 5:12, 4:9] = True  # overlapping, shifted along every axis, another shape
    spacing = np.array([2.5, 1.0, 0.8])
    d = cdist(_surface(a) * spacing, _surface(b) * spacing)
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert metrics.hd95(b, a, tuple(spacing)) == pytest.approx(expected, rel=1e-5)


def test_auroc_and_average_precision_of_a_ranking():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # pairs (positive, negative) ranked right: (0.35, 0.1), (0.8, 0.1), (0.8, 0.4); wrong: (0.35, 0.4)
    assert metrics.auroc(scores, labels) == pytest.approx(3 / 4)
    # precision at each positive, highest score first: 0.8 -> 1/1, 0.35 -> 2/3
    assert metrics.average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.auroc([1.0, 2.0, 3.0], [0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        metrics.auroc([0.1, 0.2], [1, 0, 1])


def test_paired_auroc_interval_resamples_pairs():
    """Ten pairs ranked perfectly: every resample is perfect, [1, 1]. One lesioned subject below seven twins (AUROC
    0.93, as make eval's case AUROC): the interval holds it, reaches 1.0 (resamples without that subject) and goes
    well below it; the same seed gives the same interval. Unpaired input is refused."""
    healthy = list(np.arange(10.0))
    assert metrics.paired_auroc_interval([h + 20 for h in healthy], healthy) == (1.0, 1.0)
    lesioned = [20.0] * 9 + [2.5]  # below the twins scoring 3..9
    point = metrics.auroc(lesioned + healthy, [1] * 10 + [0] * 10)
    assert point == pytest.approx(0.93)
    low, high = metrics.paired_auroc_interval(lesioned, healthy)
    assert low < 0.85 < point < high == 1.0
    assert metrics.paired_auroc_interval(lesioned, healthy) == (low, high)
    with pytest.raises(ValueError, match="pairs"):
        metrics.paired_auroc_interval([1.0, 2.0], [0.0])


def test_mae_and_psnr_agree_with_hand_values_on_two_voxels():
    pred, target = np.array([[[1.0, 5.0, 9.0]]]), np.array([[[2.0, 3.0, 100.0]]])
    mask = np.array([[[True, True, False]]])
    assert metrics.mae(pred, target, mask) == pytest.approx(1.5)  # (1 + 2) / 2
    assert metrics.psnr(pred, target, mask, 10.0) == pytest.approx(10 * np.log10(100 / 2.5), abs=1e-4)  # MSE 2.5


def test_update_runs_one_section_and_keeps_the_others(tmp_path):
    calls = []

    def section(name, value):
        def fn(ctx):
            calls.append(name)
            return SectionResult(title=f"{name} section", intro=f"About {name}.", units={"PSNR": "dB"},
                                 metrics={"model": {"PSNR": [value, float("nan")]}},
                                 targets=[Target(f"{name}: PSNR above 30 dB", value, 30.0, ">=",
                                                 note_if_missed=f"{name} is too low")])
        return fn

    registry = Registry("report section")
    registry.add("first", section("first", 31.0))
    registry.add("second", section("second", 20.0))
    evaluate(tmp_path, registry=registry)
    before = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    registry._entries["second"] = section("second", 35.0)  # the second section's model got better
    calls.clear()
    data = evaluate(tmp_path, sections=["second"], registry=registry, update=True)
    md = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    assert calls == ["second"] and list(data["sections"]) == ["first", "second"]
    assert data["targets_met"] == 2 and "**2 of 2 targets met**" in md and "**1 of 2" in before
    assert md.index("## first section") < md.index("## second section") and "About first." in md
    kept = before[before.index("## first section"):before.index("## second section")]
    assert kept in md  # the kept section's text and table exactly as before
    saved = json.loads((tmp_path / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["sections"]["first"]["metrics"]["model"]["PSNR"]["per_subject"][1] is None  # NaN kept as null
    assert "Updated " in md and "second run again" in md and "Updated " not in before
    evaluate(tmp_path, sections=["first"], registry=registry)  # without update: a report of that section only
    assert list(json.loads((tmp_path / "evaluation.json").read_text())["sections"]) == ["first"]


def test_an_update_of_a_broken_report_fails_before_any_section_runs(tmp_path):
    calls = []

    def section(ctx):
        calls.append("ran")
        return SectionResult(title="s", intro="", units={}, metrics={"model": {"PSNR": [1.0]}}, targets=[])

    registry = Registry("report section")
    registry.add("only", section)
    (tmp_path / "evaluation.json").write_text("{truncated", encoding="utf-8")
    with pytest.raises(ValueError, match="not readable JSON.*git checkout"):
        evaluate(tmp_path, sections=["only"], registry=registry, update=True)
    (tmp_path / "evaluation.json").write_text('{"sections": []}', encoding="utf-8")
    with pytest.raises(ValueError, match='no "meta" and "sections"'):
        evaluate(tmp_path, sections=["only"], registry=registry, update=True)
    assert calls == []  # nothing ran, and the broken file is as it was
    assert (tmp_path / "evaluation.json").read_text(encoding="utf-8") == '{"sections": []}'


def test_an_update_keeps_another_update_that_finished_while_it_ran(tmp_path):
    """Two updates of different sections run side by side: the one that finishes last reads the report when it
    writes, so the other's section is kept (read at the start, it was overwritten with the old one)."""
    def section(name, value, during=None):
        def fn(ctx):
            if during:
                during()
            return SectionResult(title=f"{name} section", intro=f"About {name}.", units={"PSNR": "dB"},
                                 metrics={"model": {"PSNR": [value]}},
                                 targets=[Target(f"{name}: PSNR above 30 dB", value, 30.0, ">=")])
        return fn

    registry = Registry("report section")
    registry.add("first", section("first", 20.0))
    registry.add("second", section("second", 20.0))
    evaluate(tmp_path, registry=registry)
    other = Registry("report section")
    other.add("first", section("first", 33.0))
    other.add("second", section("second", 20.0))
    # while "second" is run again, an update of "first" finishes
    registry._entries["second"] = section("second", 34.0, during=lambda: evaluate(
        tmp_path, sections=["first"], registry=other, update=True))
    data = evaluate(tmp_path, sections=["second"], registry=registry, update=True)
    assert data["targets_met"] == 2
    saved = json.loads((tmp_path / "evaluation.json").read_text(encoding="utf-8"))
    assert [saved["sections"][n]["metrics"]["model"]["PSNR"]["mean"] for n in ("first", "second")] == [33.0, 34.0]


def test_merge_takes_a_section_and_its_panel_from_another_report(tmp_path):
    def section(name, value, panel=None):
        def fn(ctx):
            if panel:
                (ctx.report_dir / panel).write_bytes(b"png of " + name.encode())
            return SectionResult(title=f"{name} section", intro=f"About {name}.", units={"PSNR": "dB"},
                                 metrics={"model": {"PSNR": [value]}}, panels=[panel] if panel else [],
                                 targets=[Target(f"{name}: PSNR above 30 dB", value, 30.0, ">=")])
        return fn

    registry = Registry("report section")
    registry.add("first", section("first", 31.0))
    registry.add("second", section("second", 20.0))
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    evaluate(here, registry=registry)
    registry._entries["second"] = section("second", 35.0, panel="second.png")  # run elsewhere (e.g. on a GPU)
    evaluate(elsewhere, sections=["second"], registry=registry)
    data = merge_sections(here, elsewhere / "evaluation.json", ["second"], registry=registry)
    assert list(data["sections"]) == ["first", "second"] and data["targets_met"] == 2
    assert (here / "second.png").read_bytes() == b"png of second"
    md = (here / "evaluation.md").read_text(encoding="utf-8")
    assert "About first." in md and "![second section](second.png)" in md and "second run again" in md
    with pytest.raises(ValueError, match="not in"):
        merge_sections(here, elsewhere / "evaluation.json", ["first"], registry=registry)


def test_adapt_baseline_strength_is_tuned_coarse_to_fine():
    from MedGANLogic.evaluation.sections.adapt import best_factor

    calls = []

    def score(factor):  # best at 3: the coarse grid's 4, then its neighbour 2 sqrt(2)
        calls.append(factor)
        return -(np.log(factor) - np.log(3.0)) ** 2

    assert best_factor(score) == pytest.approx(2 * np.sqrt(2), abs=1e-3)
    assert len(calls) == 7


def test_a_report_header_lists_its_last_updates_and_counts_the_earlier_ones():
    from MedGANLogic.evaluation.report import SHOWN_UPDATES, update_lines

    updates = [{"generated": f"2026-12-0{i + 1}", "seconds": 10.0 * i, "device": "cpu", "sections": [f"s{i}"]}
               for i in range(SHOWN_UPDATES + 2)]
    lines = update_lines(updates, "real.json", "`--update`")
    assert len(lines) == SHOWN_UPDATES + 1
    assert lines[0].startswith(f"- Updated {SHOWN_UPDATES + 2} times since") and "earlier 2" in lines[0]
    assert "real.json" in lines[0] and "s0 " not in "".join(lines) and "s1 " not in "".join(lines)
    assert lines[-1] == f"- Updated 2026-12-0{SHOWN_UPDATES + 2} ({10 * (SHOWN_UPDATES + 1)} s on cpu): " \
                        f"s{SHOWN_UPDATES + 1} run again (`--update`)."
    assert update_lines(updates[:2], "real.json", "x") == [
        "- Updated 2026-12-01 (0 s on cpu): s0 run again (x).", "- Updated 2026-12-02 (10 s on cpu): s1 run again (x)."]


def test_mr_range_is_the_width_of_mr_window_also_on_an_empty_mask():
    """The MR data range of PSNR/SSIM and the grey window of the real sections are one figure: inside the mask, and
    over the whole image when the mask is empty (mr_range used to fail there)."""
    from MedGANLogic.evaluation.context import mr_range, mr_window

    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mask = image >= 500
    for m in (mask, np.zeros_like(mask)):
        lo, hi = mr_window(image, m)
        assert mr_range(image, m) == hi - lo
    assert mr_window(image, mask)[0] >= 500 and mr_window(image, np.zeros_like(mask))[0] < 10
