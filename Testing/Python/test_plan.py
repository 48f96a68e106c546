"""The plan step: every decision and check once, before any network runs; the same warnings for every caller."""

import math
import warnings

import numpy as np
import pytest
from conftest import tiny_card

import MedGANLogic
from MedGANLogic.cli import main
from MedGANLogic.errors import InputError, MedGANWarning
from MedGANLogic.io import write_volume
from MedGANLogic.pipeline import execute, plan
from MedGANLogic.volume import Volume


def _picky_card():
    """A T1w model trained on 1.5-2.5 mm voxels and a 150-300 mm field of view."""
    return tiny_card(input={"modality": "MR", "contrast": "T1w", "spacing_mm": [1.5, 2.5], "fov_mm": [150, 300],
                            "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                              "range": [-1, 1]}})


# --- option types and ranges (issue #13, item 12): each was accepted silently before the plan step ----------------
@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("batch_size", -3, "batch_size must be a positive integer"),
    ("batch_size", 2.7, "batch_size must be a positive integer"),
    ("batch_size", True, "batch_size must be a positive integer"),
    ("batch_size", "8", "batch_size must be a positive integer"),
    ("slice_axis", True, r"slice_axis must be 0 \(z\), 1 \(y\) or 2 \(x\)"),
    ("slice_axis", 1.0, r"slice_axis must be 0 \(z\), 1 \(y\) or 2 \(x\)"),
    ("overlap", True, r"overlap must be a number in \[0, 1\)"),
    ("overlap", "0.5", r"overlap must be a number in \[0, 1\)"),
    ("overlap", math.nan, r"overlap must be a number in \[0, 1\)"),
    ("force", "no", "force must be True or False"),
    ("force", 1, "force must be True or False"),
    ("amp", "off", "amp must be True or False"),
    ("contrast", 3, "contrast must be an MR contrast name"),
])
def test_bad_option_values_are_refused_by_run(make_model, oblique_volume, option, value, message):
    make_model(tiny_card())
    with pytest.raises(InputError, match=message):
        MedGANLogic.run("synthesize", oblique_volume, **{option: value})


@pytest.mark.parametrize("option, value, message", [
    ("threshold", -0.1, "threshold must be a number >= 0"),
    ("threshold", math.inf, "threshold must be a number >= 0"),
    ("smoothing_mm", -1.0, r"smoothing_mm must be a number of mm in \[0, 50\]"),
    ("smoothing_mm", 1e4, r"smoothing_mm must be a number of mm in \[0, 50\]"),
])
def test_bad_anomaly_option_values_are_refused(make_model, oblique_volume, option, value, message):
    make_model(tiny_card("test-anomaly", task="anomaly", output={"modality": "anomaly"}))
    with pytest.raises(InputError, match=message):
        MedGANLogic.run("anomaly", oblique_volume, **{option: value})


def test_overlap_of_one_is_refused_before_the_network_loads(make_model, oblique_volume, monkeypatch):
    make_model(tiny_card())
    from MedGANLogic.models import registry

    monkeypatch.setattr(registry, "load_network", lambda *a, **k: pytest.fail("the network was loaded"))
    with pytest.raises(InputError, match=r"overlap must be a number in \[0, 1\)"):
        plan("synthesize", oblique_volume, overlap=1.0)


def test_good_options_are_typed(make_model, oblique_volume):
    make_model(tiny_card())
    p = plan("synthesize", oblique_volume, batch_size=np.int64(3), overlap=0, slice_axis=np.int32(1), force=False,
             modality=None, contrast="")
    assert p.options == {"batch_size": 3, "overlap": 0.0, "slice_axis": 1, "force": False}
    assert type(p.options["batch_size"]) is int and type(p.options["overlap"]) is float
    assert p.layout.slice_axis == 1 and p.precision == "auto"
    assert plan("synthesize", oblique_volume, amp=False).precision == "fp32"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "batch_size must be a positive integer (slices or patches per pass); got 0."),
    (["--batch-size", "-2"], "batch_size must be a positive integer (slices or patches per pass); got -2."),
    (["--overlap", "1.5"], "overlap must be a number in [0, 1)"),
    (["--threshold", "-1", "--task", "anomaly", "--model", "test-anomaly"], "threshold must be a number >= 0"),
    (["--threshold", "nan", "--task", "anomaly", "--model", "test-anomaly"], "threshold must be a number >= 0"),
])
def test_cli_refuses_bad_option_values(make_model, oblique_volume, tmp_path, capsys, args, message):
    make_model(tiny_card())
    make_model(tiny_card("test-anomaly", task="anomaly", output={"modality": "anomaly"}))
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    out = tmp_path / "out.nrrd"
    argv = ["run", "--task", "synthesize", "--input", str(src), "--output", str(out), "--modality", "MR",
            "--contrast", "T1w"] + args
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("medgan run: error:") and len(err.splitlines()) == 1
    assert not out.exists()


# --- one plan, the same warnings everywhere -----------------------------------------------------------------------
def test_same_warnings_reach_python_and_cli_stderr(make_model, oblique_volume, tmp_path, capsys):
    make_model(_picky_card())
    planned = plan("synthesize", oblique_volume, native=True).warnings
    # x 0.90 and y 1.10 mm are outside 1.5-2.5 mm (z, the slice axis, does not count); the FOV 32 x 44 mm is small
    assert len(planned) == 2
    assert "voxel size x 0.90 mm, y 1.10 mm is outside the 1.5-2.5 mm" in planned[0]
    assert "field of view x 32 mm, y 44 mm is smaller" in planned[1]

    with pytest.warns(MedGANWarning) as caught:
        MedGANLogic.run("synthesize", oblique_volume, native=True)
    assert [str(w.message) for w in caught if w.category is MedGANWarning] == planned

    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    assert main(["run", "--task", "synthesize", "--input", str(src), "--output", str(tmp_path / "t2.nrrd"),
                 "--modality", "MR", "--contrast", "T1w", "--quiet", "--native"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {w}" for w in planned]


def test_resampling_is_a_note_on_stderr_and_in_provenance(make_model, oblique_volume, tmp_path, capsys):
    make_model(_picky_card())
    planned = plan("synthesize", oblique_volume)
    assert planned.frame.resampled_from == (0.9, 1.1, 3.5) and planned.frame.spacing[:2] == (1.5, 1.5)
    # the voxel size is met by resampling; the small field of view is still a warning
    (warning,) = planned.warnings
    assert warning.startswith("field of view x 32 mm, y 44 mm is smaller")
    assert any(n.startswith("resampled from 0.90 x 1.10 x 3.50 mm voxels to 1.50 x 1.50 x 3.50 mm") for n in
               planned.notes)
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    out = tmp_path / "t2.nrrd"
    assert main(["run", "--task", "synthesize", "--input", str(src), "--output", str(out), "--modality", "MR",
                 "--contrast", "T1w"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"warning: {warning}" and err[1:1 + len(planned.notes)] == [f"note: {n}" for n in planned.notes]
    from MedGANLogic.io import read_volume

    written = read_volume(out)
    provenance = written.metadata["provenance"]
    assert np.allclose(provenance["resampled_from"], [0.9, 1.1, 3.5]) and provenance["notes"] == planned.notes
    assert provenance["bias_corrected"] is False and provenance["reoriented"] == planned.frame.reoriented
    assert written.same_geometry(oblique_volume, atol=1e-5)


def test_a_fitting_volume_gets_no_warning(make_model):
    make_model(_picky_card())
    rng = np.random.default_rng(0)
    fits = Volume(rng.random((20, 100, 100)).astype(np.float32) * 500, spacing=(2.0, 2.0, 2.0),
                  metadata={"modality": "MR", "contrast": "T1w"})
    assert plan("synthesize", fits).warnings == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedGANWarning)
        MedGANLogic.run("synthesize", fits)


def test_coronal_acquisition_is_named_for_an_axial_model(make_model, oblique_volume):
    make_model(tiny_card())
    # index axes i -> L, j -> I (rows run head to foot), k -> P: slices along k are coronal
    coronal = Volume(oblique_volume.array, spacing=(1, 1, 1), direction=[[1, 0, 0], [0, 0, 1], [0, -1, 0]],
                     metadata={"modality": "MR", "contrast": "T1w"})
    (problem,) = plan("synthesize", coronal, native=True).problems
    assert "trained on axial slices but slicing this volume along k gives coronal slices" in problem
    # slicing along j of the same volume gives axial slices again
    assert plan("synthesize", coronal, slice_axis=1, native=True).problems == []
    # without native, the engine reorients the volume into the model's orientation and back
    reoriented = plan("synthesize", coronal)
    assert reoriented.problems == [] and reoriented.frame.reoriented.startswith("coronal slices -> axial")
    assert reoriented.frame.order == (1, 0, 2)


def test_forced_modality_mismatch_is_a_warning_and_in_provenance(make_model, oblique_volume):
    make_model(tiny_card("test-ct", input={"modality": "CT", "normalization": {"kind": "ct_window",
                                                                               "window": [-1000, 2000]}}))
    p = plan("synthesize", oblique_volume, model="test-ct", force=True)
    assert p.forced_despite and "expects CT" in p.forced_despite
    assert p.warnings == [f"{p.forced_despite}; running anyway (forced)"]
    with pytest.warns(MedGANWarning, match="expects CT"):
        result = MedGANLogic.run("synthesize", oblique_volume, model="test-ct", force=True)
    assert result.provenance["forced_despite"] == p.forced_despite and result.provenance["warnings"] == p.warnings


# --- plan is a pure decision; execute(plan) is run() ---------------------------------------------------------------
def test_plan_is_deterministic_and_runs_no_network(make_model, oblique_volume, monkeypatch):
    make_model(_picky_card())
    from MedGANLogic.models import registry

    monkeypatch.setattr(registry, "load_network", lambda *a, **k: pytest.fail("plan loaded the network"))
    before = oblique_volume.array.copy()
    a = plan("synthesize", oblique_volume, batch_size=2, overlap=0.5, device="cpu")
    b = plan("synthesize", oblique_volume, batch_size=2, overlap=0.5, device="cpu")
    for name in ("task", "spec", "options", "device", "precision", "layout", "problems", "forced_despite",
                 "warnings"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.card.id == b.card.id == "test-t1-to-t2" and a.device == "cpu"
    assert a.volume.metadata == b.volume.metadata and a.volume.same_geometry(oblique_volume, atol=0)
    assert np.array_equal(oblique_volume.array, before)


def test_execute_of_a_plan_equals_run(make_model, oblique_volume):
    make_model(_picky_card())
    with pytest.warns(MedGANWarning):
        by_run = MedGANLogic.run("synthesize", oblique_volume, batch_size=2)
    by_plan = execute(plan("synthesize", oblique_volume, batch_size=2))
    assert np.array_equal(by_run.volume.array, by_plan.volume.array)
    assert by_run.volume.same_geometry(by_plan.volume, atol=0) and by_run.primary == by_plan.primary == "image"
    timeless = [{k: v for k, v in r.provenance.items() if k not in ("seconds", "time")} for r in (by_run, by_plan)]
    assert timeless[0] == timeless[1]
