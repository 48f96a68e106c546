"""The logic of the real-image report (`make eval-real`) on small made-up arrays: the HU window of the low-dose
CT scores, slice selection and the in-plane halving, photon calibration, the rough tissue masks, the run log,
and the refusal to run on an empty cache. The real images themselves are tested by Testing/RealData/."""

from __future__ import annotations

import numpy as np
import pytest

from MedGANLogic.evaluation import real, real_ldct, real_masks, real_mr
from MedGANLogic.evaluation.real_data import RealDataMissingError
from MedGANLogic.volume import Volume


# --- the low-dose CT window --------------------------------------------------------------------------------------
def test_scores_use_the_hu_window_and_its_400_hu_range():
    ref = np.full((1, 24, 24), 40.0)
    mask = np.ones_like(ref, bool)
    pred = ref + 20.0  # 20 HU off everywhere: PSNR = 20 log10(400 / 20)
    assert real.windowed_scores(pred, ref, mask)[0] == pytest.approx(20 * np.log10(400 / 20), abs=1e-3)
    # outside the window nothing counts: -1000 and -200 HU are both clipped to -160
    lung_ref, lung_pred = np.full((24, 24), -1000.0), np.full((24, 24), -200.0)
    assert real.windowed_scores(lung_pred, lung_ref, np.ones((24, 24), bool))[0] > 100  # inf: no error left


def test_scores_count_only_the_mask():
    ref = np.zeros((1, 24, 24))
    pred = ref.copy()
    pred[0, :, :12] = 200.0  # wrong only in the left half
    right = np.zeros_like(ref, bool)
    right[0, :, 12:] = True
    assert real.windowed_scores(pred, ref, right)[0] > 100
    assert real.windowed_scores(pred, ref, ~right)[0] == pytest.approx(20 * np.log10(400 / 200), abs=1e-3)


# --- slices, halving, calibration -----------------------------------------------------------------------------------
def test_tuning_and_scored_slices_are_disjoint_and_central():
    scored, tuning = real_ldct.select_slices(48)
    assert len(scored) == 5 and len(tuning) == 2
    assert not set(scored) & set(tuning)
    assert min(scored + tuning) >= int(0.2 * 47) and max(scored + tuning) <= int(np.ceil(0.8 * 47))


def test_half_resolution_keeps_the_field_of_view():
    vol = Volume(np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6), spacing=(0.6, 0.5, 5.0),
                 origin=(-10.0, 20.0, 3.0), direction=np.diag([1.0, -1.0, 1.0]))
    half = real_ldct.half_resolution(vol)
    assert half.shape == (2, 2, 3) and half.spacing == pytest.approx((1.2, 1.0, 5.0))
    # the first coarse pixel is the mean of the first 2 x 2 block and sits at its centre
    assert half.array[0, 0, 0] == pytest.approx(np.mean([0, 1, 6, 7]))
    assert half.origin == pytest.approx((-10.0 + 0.3, 20.0 - 0.25, 3.0))
    assert vol.shape == (2, 5, 6)  # input untouched


def test_slice_volume_sits_where_the_slice_is():
    vol = Volume(np.zeros((4, 3, 3)), spacing=(1.0, 1.0, 2.5), origin=(1.0, 2.0, 3.0),
                 direction=np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]))
    one = real_ldct.slice_volume(vol, 2, np.ones((3, 3)))
    assert one.shape == (1, 3, 3)
    np.testing.assert_allclose(one.ijk_to_lps() @ [0, 0, 0, 1], vol.ijk_to_lps() @ [0, 0, 2, 1])


def test_photon_calibration_follows_one_over_root_n():
    photons = real_ldct.photons_for_noise(15.0, 1.6e6, 60.0)
    assert photons == pytest.approx(1.6e6 / 16)
    assert 15.0 * np.sqrt(1.6e6 / photons) == pytest.approx(60.0)


def test_crop_box_centres_on_the_body_and_stays_inside():
    body = np.zeros((256, 256), bool)
    body[100:200, 10:60] = True
    ys, xs = real_ldct.crop_box(body, 64)
    assert (ys.start, ys.stop) == (117, 181) and (xs.start, xs.stop) == (2, 66)
    ys, xs = real_ldct.crop_box(body, 300)
    assert (ys.start, ys.stop, xs.start, xs.stop) == (0, 256, 0, 256)


# --- rough masks ----------------------------------------------------------------------------------------------------
def _head_phantom() -> tuple[np.ndarray, tuple[float, float, float]]:
    """A T1w-like head: bright scalp ring, dark skull ring, brain (WM bright, GM darker), dark ventricles."""
    z, n = 6, 96
    yy, xx = np.mgrid[:n, :n] - n / 2 + 0.5
    r = np.hypot(yy, xx)
    s = np.zeros((n, n), np.float32)
    s[r < 44] = 900.0  # scalp
    s[r < 40] = 80.0  # skull
    s[r < 36] = 500.0  # grey matter
    s[r < 28] = 700.0  # white matter
    s[(np.abs(yy) < 4) & (np.abs(xx) < 10)] = 150.0  # ventricles (CSF)
    rng = np.random.default_rng(0)
    return np.stack([s] * z) + rng.normal(0, 10, (z, n, n)).astype(np.float32), (1.0, 1.0, 3.0)


def test_brain_mask_strips_the_scalp_and_classes_follow_t1_order():
    image, spacing = _head_phantom()
    head = real_masks.mr_head(image)
    brain = real_masks.mr_brain(image, spacing, head)
    yy, xx = np.mgrid[:96, :96] - 47.5
    r = np.hypot(yy, xx)
    assert brain[:, r < 30].mean() > 0.99  # the brain is in
    assert brain[:, r > 38].mean() < 0.01  # skull and scalp are out
    classes = real_masks.t1_tissue_classes(image, brain, spacing)
    assert classes["csf"].any() and classes["wm"].any()
    assert image[classes["csf"]].mean() < 300 and image[classes["wm"]].mean() > 600
    assert real_mr.csf_wm_ratio(image, classes["csf"], classes["wm"]) < 0.5
    shell = real_masks.skull_shell(head, brain, spacing)
    assert shell.any() and not (shell & brain).any()
    assert np.all(r[shell[2]] > 34)  # outside the brain's edge


def test_tumour_is_left_out_of_the_tissue_classes():
    image, spacing = _head_phantom()
    brain = real_masks.mr_brain(image, spacing)
    tumour = np.zeros_like(brain)
    tumour[:, 30:40, 60:70] = True
    classes = real_masks.t1_tissue_classes(image, brain, spacing, tumour)
    assert not (classes["core"] & tumour).any()


def test_ct_body_and_soft_tissue():
    hu = np.full((1, 64, 64), -1000.0)
    hu[0, 8:56, 8:56] = 40.0
    hu[0, 20:30, 20:30] = -800.0  # lung inside the body
    body = real_masks.ct_body(hu)
    assert body[0, 25, 25] and not body[0, 2, 2]  # holes filled, air out
    soft = real_masks.ct_soft_tissue(hu)
    assert soft[0, 45, 45] and not soft[0, 25, 25] and not soft[0, 9, 9]


def test_zscore_map_lights_a_bright_spot_only_inside_the_region():
    image = np.full((3, 40, 40), 100.0) + np.random.default_rng(1).normal(0, 5, (3, 40, 40))
    image[1, 18:22, 18:22] = 300.0
    region = np.zeros(image.shape, bool)
    region[:, 5:35, 5:35] = True
    z = real_mr.zscore_map(image, region, (1.0, 1.0, 1.0), smoothing_mm=0.5)
    assert z[1, 20, 20] > 10 and z[1, 8, 8] < 3 and z[0, 0, 0] == 0


# --- run log and report -------------------------------------------------------------------------------------------
def test_runs_are_summarised_per_model_and_case():
    runs = [{"model": "m", "case": "a", "seconds": 1.5, "warnings": ["w1"], "notes": ["resampled"]},
            {"model": "m", "case": "a", "seconds": 2.0, "warnings": ["w1", "w2"]},
            {"model": "m", "case": "b", "seconds": 1.0, "warnings": [], "error": "InputError: bad"}]
    rows = real.summarise_runs(runs)
    assert [(r["case"], r["runs"], r["seconds"]) for r in rows] == [("a", 2, 3.5), ("b", 1, 1.0)]
    assert rows[0]["warnings"] == ["resampled", "w1", "w2"] and rows[1]["errors"] == ["InputError: bad"]


def test_the_report_refuses_an_empty_cache_and_names_the_make_target(tmp_path):
    with pytest.raises(RealDataMissingError, match="make eval-real"):
        real.evaluate_real(tmp_path / "report", cache=tmp_path / "empty")
    assert not (tmp_path / "report" / "real.md").exists()
    assert real.main(["--report", str(tmp_path / "report"), "--cache", str(tmp_path / "empty")]) == 2


def test_every_registered_section_is_known():
    assert set(real.REAL_SECTIONS.names()) == {"ldct-default", "ldct-realistic", "ldct-soft", "t1-to-t2", "t2-to-t1",
                                               "mr-to-ct", "superres",
                                               "anomaly", "adapt-superres", "adapt-inplane", "adapt-denoise"}


def test_axial_view_puts_anterior_up_and_patient_right_left():
    img = np.arange(6.0).reshape(2, 3)  # row 0 / column 0 are the first voxels along j / i
    # save_panel shows rows bottom-up, so what it is handed must have anterior at the bottom
    lps = np.eye(3)  # j runs anterior -> posterior, i runs right -> left
    np.testing.assert_array_equal(real.axial_view(img, lps)[::-1], img)
    flipped_y = np.diag([1.0, -1.0, 1.0])  # j runs posterior -> anterior (the brain NRRDs)
    np.testing.assert_array_equal(real.axial_view(img, flipped_y)[::-1], img[::-1])
    flipped_x = np.diag([-1.0, 1.0, 1.0])  # i runs left -> right
    np.testing.assert_array_equal(real.axial_view(img, flipped_x)[::-1], img[:, ::-1])


def test_update_runs_some_sections_again_and_keeps_the_others_with_their_runs(tmp_path, monkeypatch):
    """`python -m MedGANLogic.evaluation.real --sections anomaly --update`: the other sections and their model runs
    stay as they were, the re-run section's runs are replaced, and the header says what was updated."""
    import json

    from MedGANLogic.evaluation import real_data
    from MedGANLogic.evaluation.context import SectionResult, Target

    calls = []

    def fake(name, value):
        def section(ctx):
            calls.append(name)
            ctx.runs.append({"model": "m", "case": name, "section": ctx.section, "seconds": value, "warnings": []})
            return SectionResult(title=f"title {name}", intro="", metrics={"model": {"PSNR": [value]}},
                                 units={"PSNR": "dB"}, targets=[Target(f"{name} t", value, 1.5, ">=")], panels=[],
                                 info={})
        return section

    monkeypatch.setattr(real_data, "missing_files", lambda cache=None: [])
    monkeypatch.setitem(real.REAL_SECTIONS._entries, "superres", fake("superres", 1.0))
    monkeypatch.setitem(real.REAL_SECTIONS._entries, "anomaly", fake("anomaly", 1.0))
    report = tmp_path / "report"
    assert real.main(["--report", str(report), "--sections", "superres,anomaly"]) == 0
    monkeypatch.setitem(real.REAL_SECTIONS._entries, "anomaly", fake("anomaly", 2.0))
    assert real.main(["--report", str(report), "--sections", "anomaly", "--update"]) == 0
    assert calls == ["superres", "anomaly", "anomaly"]
    data = json.loads((report / "real.json").read_text(encoding="utf-8"))
    assert list(data["sections"]) == ["superres", "anomaly"]  # registry order, the kept one first
    assert data["sections"]["superres"]["metrics"]["model"]["PSNR"]["mean"] == 1.0
    assert data["sections"]["anomaly"]["metrics"]["model"]["PSNR"]["mean"] == 2.0
    assert data["targets_met"] == 1 and data["targets_total"] == 2
    assert sorted((r["case"], r["seconds"]) for r in data["runs"]) == [("anomaly", 2.0), ("superres", 1.0)]
    assert [u["sections"] for u in data["meta"]["updates"]] == [["anomaly"]]
    assert "anomaly run again (`--sections ... --update`)" in (report / "real.md").read_text(encoding="utf-8")
    # runs recorded before runs named their section (copies, or of sections since changed) are dropped
    data["runs"] += [{"model": "m", "case": "anomaly", "seconds": 9.0, "warnings": ["old card"]},
                     {"model": "m", "case": "elsewhere", "seconds": 7.0, "warnings": []}]
    (report / "real.json").write_text(json.dumps(data), encoding="utf-8")
    assert real.main(["--report", str(report), "--sections", "anomaly", "--update"]) == 0
    data = json.loads((report / "real.json").read_text(encoding="utf-8"))
    assert sorted((r["case"], r["seconds"]) for r in data["runs"]) == [("anomaly", 2.0), ("superres", 1.0)]
    with pytest.raises(SystemExit):
        real.main(["--report", str(report), "--update"])  # --update without --sections
    (report / "real.json").write_text("{truncated", encoding="utf-8")  # a broken report: refused before any section
    assert real.main(["--report", str(report), "--sections", "anomaly", "--update"]) == 2
    assert calls == ["superres", "anomaly", "anomaly", "anomaly"]


def test_hyperintense_share_measures_how_much_of_the_highest_map_lies_on_the_brightest_tissue():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (4, 40, 40)).astype(np.float32)
    image[:, 20, 10:30] = 300.0  # a bright vessel: 80 of 6400 voxels, above the 99th percentile
    normal = np.ones(image.shape, bool)
    on_vessel = np.where(image > 200, 5.0, rng.uniform(0, 1, image.shape)).astype(np.float32)
    share, chance = real_mr.hyperintense_share(image, on_vessel, normal)
    assert share == 100.0 and 2.0 < chance < 5.0  # the vessel and its in-plane neighbours: 3 rows of 20 of 1600
    elsewhere = on_vessel.copy()
    elsewhere[image > 200] = 0.0
    elsewhere[:, 5, 5:25] = 5.0
    assert real_mr.hyperintense_share(image, elsewhere, normal)[0] < 10.0
    assert real_mr.hyperintense_share(image, np.zeros(image.shape, np.float32), normal) is None  # no map made
    assert real_mr.hyperintense_share(image, np.full(image.shape, np.nan, np.float32), normal) is None


def test_end_slices_are_the_outermost_slices_of_the_region_along_the_thickest_axis():
    region = np.zeros((8, 6, 7), bool)
    region[2:6, 1:5, 1:6] = True
    ends = real_mr.end_slices(region, (1.0, 1.0, 5.0))  # z (array axis 0) is thickest
    assert np.array_equal(ends[2], region[2]) and np.array_equal(ends[5], region[5])
    assert ends.sum() == region[2].sum() + region[5].sum()
    along_x = real_mr.end_slices(region, (5.0, 1.0, 1.0))  # x (array axis 2) is thickest
    assert np.array_equal(along_x[:, :, 1], region[:, :, 1]) and np.array_equal(along_x[:, :, 5], region[:, :, 5])
    assert along_x.sum() == region[:, :, 1].sum() + region[:, :, 5].sum()
    assert not real_mr.end_slices(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0)).any()


def test_main_prints_what_it_was_asked_wrongly_in_one_line_and_lets_a_sections_own_error_through(monkeypatch, capsys):
    """An unknown section or a broken report is one line and exit status 2; any other error (a section's bug) keeps
    its traceback, in both report commands."""
    import MedGANLogic.evaluation.__main__ as eval_main
    from MedGANLogic.evaluation.report import ReportError

    assert real.main(["--sections", "no-such-section", "--cache", "/nonexistent"]) == 2  # before the cache check
    assert "Unknown real-data report section 'no-such-section'" in capsys.readouterr().err
    for module, name in ((real, "evaluate_real"), (eval_main, "evaluate")):
        monkeypatch.setattr(module, name, lambda *a, **k: (_ for _ in ()).throw(ValueError("a section's own bug")))
        with pytest.raises(ValueError, match="own bug"):
            module.main(["--sections", "anomaly", "--update"])
        monkeypatch.setattr(module, name, lambda *a, **k: (_ for _ in ()).throw(ReportError("broken report")))
        assert module.main(["--sections", "anomaly", "--update"]) == 2
        assert "broken report" in capsys.readouterr().err
