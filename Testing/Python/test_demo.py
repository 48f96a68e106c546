"""`medgan demo`: the montage shows each task where it matters, with a figure read from the committed report."""

import json

import numpy as np
import pytest
from conftest import REPO

from MedGANLogic.demo import REPORT, largest_lesion_point, load_report, report_figure, run_demo, view_slice
from MedGANLogic.io import read_volume
from MedGANLogic.volume import Volume


def test_captions_quote_the_committed_report():
    from MedGANLogic.models.registry import list_models

    report = json.loads(REPORT.read_text(encoding="utf-8"))
    models = {card.id for card in list_models()}
    for model_id, section in report["sections"].items():
        if model_id not in models:  # sections about a task, not one model (lesion-augmentation, adapt-...)
            continue
        metric = next(iter(section["units"]))
        rows = section["metrics"]
        model_row = next(n for n in rows if n == "model" or model_id in n)
        caption = report_figure(model_id, report)
        value = rows[model_row][metric]["mean"]
        assert caption.startswith(f"{metric} "), caption
        assert (f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}") in caption, caption
        assert "not a method" not in caption and "evaluation.json" in caption
    # lower is better for errors: the strongest baseline is the smallest MAE
    assert "MAE head" in report_figure("mr-to-ct", report) and "lower is better" in report_figure("mr-to-ct", report)
    # the denoiser is compared with non-local means, not with doing nothing (the low-dose input)
    assert "non-local means" in report_figure("ldct-denoise", report)


def test_a_caption_says_when_the_report_has_no_figure():
    assert "not there" in report_figure("mr-t1-to-t2", None)
    report = load_report()
    assert "has no results for my-model" in report_figure("my-model", report)
    section = json.loads(json.dumps(report["sections"]["mr-t1-to-t2"]))
    section["metrics"] = {"model": section["metrics"]["model"]}  # no baseline row
    assert "and a baseline" in report_figure("mr-t1-to-t2", {"sections": {"mr-t1-to-t2": section}})


def test_slices_are_shown_anterior_up_and_patient_right_on_the_left():
    """A volume whose i axis runs towards the patient's right and j towards anterior (direction diag(-1, -1, 1), as
    in the sample data and many NIfTI files) is turned to the radiological convention."""
    array = np.zeros((5, 6, 7), np.float32)
    vol = Volume(array, spacing=(1.0, 2.0, 3.0), direction=np.diag([-1.0, -1.0, 1.0]))
    # the voxel most to the patient's right (LPS x smallest) and most anterior (LPS y smallest): i, j largest
    array[2, 5, 6] = 1
    point = vol.ijk_to_lps() @ np.array([6, 5, 2, 1.0])
    image, pixel, where = view_slice(vol, point[:3], "axial")
    assert image[0, 0] == 1 and image.sum() == 1  # top left of the picture: anterior, patient's right
    assert pixel == (2.0, 1.0) and where == {"array_axis": 0, "index": 2}
    coronal, pixel, where = view_slice(vol, point[:3], "coronal")
    assert coronal.shape == (5, 7) and pixel == (3.0, 1.0) and where == {"array_axis": 1, "index": 5}
    assert coronal[2, 0] == 1  # middle row (z = 2 of 0..4), left column: patient's right


def test_the_focus_is_the_largest_lesion():
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[2:4, 2:4, 2:4] = 1  # small
    mask[5:9, 10:16, 12:18] = 1  # large: 4 x 6 x 6 voxels of 2 mm
    point, ml = largest_lesion_point(Volume(mask, spacing=(2.0, 2.0, 2.0), origin=(-5.0, 0.0, 10.0)))
    assert ml == pytest.approx(4 * 6 * 6 * 8 / 1000)
    assert np.allclose(point, [-5 + 2 * 14.5, 2 * 12.5, 10 + 2 * 5])  # the first of its largest cross-sections


@pytest.mark.slow
def test_the_demo_montage_is_large_captioned_from_the_report_and_shows_the_lesion(tmp_path):
    from PIL import Image

    models = ["brain-anomaly-t2", "mr-t1-to-t2"]
    assert run_demo(tmp_path, device="cpu", models=models, log=lambda *a, **k: None) == 0
    montage = Image.open(tmp_path / "montage.png")
    record = json.loads((tmp_path / "montage.json").read_text(encoding="utf-8"))
    assert montage.width >= 1200 and list(montage.size) == record["size"]
    rows = {r["model"]: r for r in record["rows"]}
    assert list(rows) == ["mr-t1-to-t2", "brain-anomaly-t2"]  # tasks in their usual order
    report = load_report()
    for model_id, row in rows.items():
        assert row["figure"] == report_figure(model_id, report, REPORT.name)
    metrics = report["sections"]["brain-anomaly-t2"]["metrics"]
    auroc = metrics["brain-anomaly-t2 (restoration GAN)"]["voxel AUROC"]["mean"]
    assert f"voxel AUROC {auroc:.3f}" in rows["brain-anomaly-t2"]["figure"]
    # the anomaly row cuts through lesion voxels of the sample's lesion mask
    anomaly = rows["brain-anomaly-t2"]
    mask = read_volume(REPO / "Resources" / "SampleData" / "sample_lesion_mask.nrrd").array
    assert anomaly["plane"] == "axial" and np.take(mask, anomaly["index"], axis=anomaly["array_axis"]).any()
    assert anomaly["panels"][1] == "anomaly map over the scan"


def test_the_mr_denoiser_row_shows_the_sample_with_noise_added_against_the_sample(tmp_path):
    """The sample MR is nearly noise-free: the row's input is it with Rician noise, its reference the sample."""
    assert run_demo(tmp_path, device="cpu", models=["mr-denoise"], log=lambda *a, **k: None) == 0
    (row,) = json.loads((tmp_path / "montage.json").read_text(encoding="utf-8"))["rows"]
    assert row["panels"][0].startswith("input: T1w + Rician noise")
    assert row["panels"][2].startswith("reference: the sample before the noise was added")
    assert "dose" not in " ".join(row["panels"])


def test_a_contrast_agnostic_model_is_compared_with_its_input_contrast():
    """The super-resolution cards name no contrast (2.0.0 serves every contrast): their demo rows compare the
    thick-slice or low-resolution T2w sample with the 2 mm T2w sample, not with the first MR sample there is."""
    from MedGANLogic.demo import load_manifest, pick_reference, pick_sample
    from MedGANLogic.models.registry import get_model

    entries = load_manifest()
    for model_id in ("mr-sr-x2-throughplane", "mr-sr-x2-inplane"):
        card = get_model(model_id)
        assert not card.input.get("contrast")
        assert pick_sample(card, entries)["contrast"] == "T2w"
        assert pick_reference(card, entries)["path"].name == "sample_T2w.nrrd"
