"""One rule for "does this look like CT", one description of a volume's modality, one modality check; the MR
contrast a file does not record, estimated; N4 bias-field correction."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, tiny_card

from MedGANLogic.errors import InputError, MedGANWarning
from MedGANLogic.io import read_volume
from MedGANLogic.modality import (
    HEAD_MAX_ENCLOSED_AIR,
    NOT_CT,
    body_part_problem,
    declare,
    describe_modality,
    enclosed_air_fraction,
    estimate_contrast,
    guess_modality,
    is_ct,
    looks_like_ct,
    modality_problem,
)
from MedGANLogic.normalization import bias_correct, head_mask
from MedGANLogic.pipeline import plan, run
from MedGANLogic.simulate.subjects import make_subject
from MedGANLogic.volume import Volume


def _ct_array():
    ct = np.full((8, 30, 30), -1000, np.float32)
    ct[:, 5:25, 5:25] = 40
    ct[:, 10:12, 10:20] = 900
    return ct


def test_looks_like_ct_wants_air_and_tissue_in_hounsfield_units():
    assert looks_like_ct(_ct_array())
    assert not looks_like_ct(np.abs(_ct_array()))  # MR-like: no negative values
    assert not looks_like_ct(np.full((4, 10, 10), -1000, np.float32))  # air only
    assert not looks_like_ct(np.zeros((0, 4, 4), np.float32))


def test_declare_records_what_the_user_says_and_guesses_only_without_a_record():
    raw = Volume(_ct_array())
    guessed = declare(raw)
    assert guessed.metadata["guessed_modality"] == "CT" and is_ct(guessed) and "modality" not in raw.metadata
    assert guessed.array is raw.array  # voxels shared, never copied or modified
    declared = declare(raw, modality="MR", contrast="T1w")
    assert declared.metadata == {"modality": "MR", "contrast": "T1w"} and not is_ct(declared)
    recorded = Volume(_ct_array(), metadata={"modality": "CT"})
    assert declare(recorded) is recorded


def test_voxels_that_cannot_be_hounsfield_units_are_guessed_not_ct():
    assert guess_modality(_ct_array()) == "CT"
    assert guess_modality(np.abs(_ct_array())) == NOT_CT  # a magnitude image: no negative value
    assert guess_modality(_ct_array() / 1000) is None  # negative values, but not HU: no guess either way
    assert guess_modality(np.zeros((0, 4, 4), np.float32)) is None
    mr = declare(Volume(np.abs(_ct_array())))
    assert mr.metadata["guessed_modality"] == NOT_CT and not is_ct(mr)
    assert describe_modality(mr) == "modality not recorded (not CT: no negative values)"
    assert "guessed_modality" not in declare(Volume(np.abs(_ct_array())), modality="CT").metadata  # declared


def test_a_ct_model_does_not_fit_a_volume_that_cannot_be_hounsfield_units():
    card = SimpleNamespace(id="ct-model", input={"modality": "CT"})
    problem = modality_problem(card, declare(Volume(np.abs(_ct_array()))))
    assert "expects CT in Hounsfield units" in problem and "no negative values" in problem
    assert "modality=MR" in problem and "convert it to HU" in problem  # the two fixes
    assert modality_problem(card, declare(Volume(_ct_array()))) is None
    assert modality_problem(card, declare(Volume(np.abs(_ct_array())), modality="CT")) is None  # the user says so
    assert modality_problem(card, declare(Volume(_ct_array() / 1000))) is None  # no guess: not refused


def test_describe_modality_of_volumes_and_card_sides():
    assert describe_modality(Volume(np.ones((2, 2, 2)), metadata={"modality": "MR", "contrast": "T2w"})) == "MR T2w"
    assert describe_modality(declare(Volume(_ct_array()))) == "looks like CT (not recorded)"
    assert describe_modality(Volume(np.ones((2, 2, 2)))) == "modality not recorded"  # not declared: no guess
    assert describe_modality({"modality": "CT", "normalization": {}}) == "CT"


def test_modality_problem():
    card = SimpleNamespace(id="t1-model", input={"modality": "MR", "contrast": "T1w"})
    ok = Volume(np.ones((2, 2, 2)), metadata={"modality": "MR", "contrast": "T1w"})
    assert modality_problem(card, ok) is None
    assert modality_problem(card, Volume(np.ones((2, 2, 2)), metadata={"modality": "MR"})) is None  # unrecorded
    assert "expects MR input but the volume is CT" in modality_problem(card, Volume(_ct_array(),
                                                                                    metadata={"modality": "CT"}))
    assert "looks like CT" in modality_problem(card, declare(Volume(_ct_array())))
    assert "expects MR T1w but the volume is MR FLAIR" in modality_problem(
        card, Volume(np.ones((2, 2, 2)), metadata={"modality": "MR", "contrast": "FLAIR"}))
    assert modality_problem(SimpleNamespace(id="any", input={"modality": "any"}), declare(Volume(_ct_array()))) is None


# --- the contrast a file does not record, estimated from tissue statistics ----------------------------------------
SAMPLE = REPO / "Resources" / "SampleData"


@pytest.mark.parametrize("name, contrast", [("T1w", "T1w"), ("T2w", "T2w"), ("FLAIR", "FLAIR"), ("T2w_thick", "T2w")])
def test_contrast_is_estimated_on_the_sample_phantom(name, contrast):
    volume = read_volume(SAMPLE / f"sample_{name}.nrrd")  # the files record no contrast
    assert "contrast" not in volume.metadata
    guess, why = estimate_contrast(volume)
    assert guess == contrast, why


@pytest.mark.slow
def test_contrast_is_unknown_when_the_statistics_fit_none():
    pd = make_subject(2001, spacing_mm=4.0, contrasts=("PD",), n_lesions=0).volumes["PD"]  # CSF ~ grey matter
    assert estimate_contrast(pd)[0] is None
    rng = np.random.default_rng(0)
    assert estimate_contrast(Volume(rng.random((20, 40, 40)).astype(np.float32)))[0] is None  # no anatomy
    assert estimate_contrast(Volume(np.ones((3, 4, 4), np.float32)))[0] is None  # too small


def test_contrast_is_not_judged_on_less_than_a_head():
    t2 = read_volume(SAMPLE / "sample_T2w.nrrd")
    assert estimate_contrast(t2)[0] == "T2w"
    z, y, x = (n // 2 for n in t2.shape)
    slab = t2.with_array(np.ascontiguousarray(t2.array[:, :, x - 8: x + 8]))  # a 32 mm sagittal slab: still a head
    assert estimate_contrast(slab)[0] == "T2w"
    box = t2.with_array(np.ascontiguousarray(t2.array[z - 10: z + 10, y - 20: y + 20, x - 8: x + 8]))
    guess, why = estimate_contrast(box)  # 40 x 80 x 32 mm: the breast MR of make eval-real was called T2w before
    assert guess is None and re.search(r"spans only \d+ x \d+ mm, less than a whole head", why)


def test_undeclared_contrast_is_estimated_and_a_mismatch_warned(model_dir, monkeypatch):
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(REPO / "Resources" / "Models"))
    from MedGANLogic.models import registry

    registry.clear_cache()
    t2 = read_volume(SAMPLE / "sample_T2w.nrrd")
    p = plan("synthesize", t2, model="mr-t1-to-t2")
    assert p.contrast_estimated == "T2w"
    (warning,) = p.warnings
    assert "not recorded and looks like T2w" in warning and "expects T1w" in warning
    middle = t2.with_array(np.ascontiguousarray(t2.array[40:52]))  # a slab through the ventricles runs faster
    with pytest.warns(MedGANWarning, match="looks like T2w"):
        pass_through = run("synthesize", middle, model="mr-t1-to-t2")
    assert pass_through.provenance["contrast_estimated"] == "T2w"
    # without a named model, the one for the estimated contrast is chosen (before: the first MR synthesis model)
    chosen = plan("synthesize", t2)
    assert chosen.card.id == "mr-t2-to-t1" and chosen.warnings == []
    assert any("estimated T2w" in n for n in chosen.notes)
    # a declared contrast is never second-guessed
    assert plan("synthesize", t2, model="mr-t1-to-t2", contrast="T1w").contrast_estimated is None


def test_an_mr_file_that_records_no_modality_gets_the_mr_model(model_dir, monkeypatch):
    """A real MR file without a modality (the pyradiomics brains) used to be denoised by ldct-denoise, the first
    denoiser installed, into "HU"; now the MR denoiser is chosen and the CT one refused unless forced."""
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(REPO / "Resources" / "Models"))
    from MedGANLogic.errors import ModalityMismatchError
    from MedGANLogic.models import registry

    registry.clear_cache()
    t1 = read_volume(SAMPLE / "sample_T1w.nrrd")
    assert "modality" not in t1.metadata and {c.id for c in registry.list_models("denoise")} >= {"ldct-denoise",
                                                                                               "mr-denoise"}
    assert plan("denoise", t1).card.id == "mr-denoise"
    with pytest.raises(ModalityMismatchError, match="expects CT in Hounsfield units"):
        plan("denoise", t1, model="ldct-denoise")
    assert plan("denoise", t1, model="ldct-denoise", force=True).forced_despite
    ct = Volume(_ct_array())  # unrecorded, in HU: the CT denoiser
    assert plan("denoise", ct).card.id == "ldct-denoise"


def _chest_ct(lungs: bool = True) -> np.ndarray:
    """A 2 mm chest-like CT (z, y, x): an elliptic body of soft tissue, a spine, and two lungs of air."""
    z, y, x = np.ogrid[:40, :120, :160]
    ct = np.full((40, 120, 160), -1000, np.float32)
    ct[:, ((y[0] - 60) / 50.0) ** 2 + ((x[0] - 80) / 75.0) ** 2 < 1] = 40
    ct[:, 85:100, 72:88] = 700  # the spine
    if lungs:
        for cx in (50, 110):
            ct[(((y - 55) / 30.0) ** 2 + ((x - cx) / 22.0) ** 2 < 1) & (z > 3) & (z < 37)] = -850
    return ct


def test_enclosed_air_tells_a_chest_from_a_head():
    """Lungs are enclosed air; the phantom head CT encloses almost none (its sinuses)."""
    chest = enclosed_air_fraction(_chest_ct())
    assert 0.15 < chest < 0.4
    assert enclosed_air_fraction(_chest_ct(lungs=False)) == 0.0
    head = read_volume(SAMPLE / "sample_CT.nrrd").array
    assert enclosed_air_fraction(head) < 0.02 < HEAD_MAX_ENCLOSED_AIR
    trachea = _chest_ct()
    trachea[:, 50:58, 76:84] = -900  # an airway leaving the volume at both ends: the lungs are still enclosed
    trachea[:4, 50:58, 76:84] = -900
    assert enclosed_air_fraction(trachea) > 0.15
    assert enclosed_air_fraction(np.full((4, 8, 8), -1000, np.float32)) == 0.0  # no body at all


def test_a_head_model_refuses_a_chest_ct():
    card = SimpleNamespace(id="head-ct-model", input={"modality": "CT", "body_part": "head"})
    chest = declare(Volume(_chest_ct(), spacing=(2.0, 2.0, 2.0)))
    problem = modality_problem(card, chest)
    assert "made for heads" in problem and "enclosed air" in problem and "head CT" in problem
    head = declare(read_volume(SAMPLE / "sample_CT.nrrd"))
    assert modality_problem(card, head) is None
    assert body_part_problem(SimpleNamespace(id="any-ct", input={"modality": "CT"}), chest) is None  # any body part
    mr = declare(Volume(np.abs(_chest_ct())), modality="MR")
    assert body_part_problem(card, mr) is None  # the air rule is for CT


def test_ct_to_mr_is_refused_on_a_chest_ct_unless_forced(model_dir, monkeypatch):
    """ct-to-mr was made for heads; on a chest CT it painted lungs into a "T1w MR" with only a field-of-view
    warning. Now the plan refuses it, names why, and a forced run says so."""
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(REPO / "Resources" / "Models"))
    from MedGANLogic.errors import ModalityMismatchError
    from MedGANLogic.models import registry

    registry.clear_cache()
    assert registry.get_model("ct-to-mr").input["body_part"] == "head"
    chest = Volume(_chest_ct(), spacing=(2.0, 2.0, 2.0), metadata={"modality": "CT"})
    with pytest.raises(ModalityMismatchError, match="made for heads"):
        plan("synthesize", chest, model="ct-to-mr")
    with pytest.raises(ModalityMismatchError, match="No 'synthesize' model fits") as refused:
        plan("synthesize", chest)
    # the CT model of the task was refused for the body part, and the message says so (not only that it exists)
    assert "Model ct-to-mr was made for heads" in str(refused.value) and "Give it a head CT" in str(refused.value)
    assert "expects MR" not in str(refused.value)  # the MR models' refusal is the modality list itself
    forced = plan("synthesize", chest, model="ct-to-mr", force=True)
    assert "made for heads" in forced.forced_despite and any("made for heads" in w for w in forced.warnings)
    head = read_volume(SAMPLE / "sample_CT.nrrd")
    assert plan("synthesize", head).card.id == "ct-to-mr"


def test_without_a_model_named_an_any_contrast_model_beats_one_for_another_contrast(model_dir, monkeypatch):
    """A T1w brain whose file records no contrast, task segment: brain-mask (any MR contrast) fits it, the FLAIR
    lesion segmenter only with a warning, so brain-mask is chosen (it was the segmenter, by list order); a FLAIR
    still gets the segmenter."""
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(REPO / "Resources" / "Models"))
    from MedGANLogic.models import registry

    registry.clear_cache()
    for name, expected in (("T1w", "brain-mask"), ("FLAIR", "brain-lesion-seg")):
        vol = read_volume(SAMPLE / f"sample_{name}.nrrd")
        unrecorded = Volume(vol.array, vol.spacing, vol.origin, vol.direction,
                            {k: v for k, v in vol.metadata.items() if k != "contrast"})
        chosen = plan("segment", unrecorded)
        assert chosen.card.id == expected, (name, chosen.card.id, chosen.warnings)


# --- N4 bias-field correction --------------------------------------------------------------------------------------
def test_bias_correction_flattens_a_smooth_field():
    t1 = read_volume(SAMPLE / "sample_T1w.nrrd")
    x = np.linspace(-1, 1, t1.shape[2], dtype=np.float32)
    biased = t1.array * (1 + 0.3 * x)[None, None, :]  # 0.7 on one side, 1.3 on the other
    corrected = bias_correct(biased, t1.spacing)
    assert not np.shares_memory(corrected, biased)
    head = head_mask(t1.array)
    brain = head & (t1.array > np.percentile(t1.array[head], 50))
    left, right = brain.copy(), brain.copy()
    left[..., t1.shape[2] // 2:] = False
    right[..., :t1.shape[2] // 2] = False

    def ratio(a):
        return float(np.median(a[right]) / np.median(a[left]))

    assert abs(ratio(t1.array) - 1) < 0.01  # the phantom's own bias field is balanced left to right
    assert ratio(biased) > 1.15 and abs(ratio(corrected) - 1) < 0.03  # measured: 1.19 -> 1.000


def test_bias_correction_is_for_mr_and_is_recorded(make_model):
    make_model(tiny_card())
    ct = Volume(_ct_array(), metadata={"modality": "CT"})
    with pytest.raises(InputError, match="bias_correction applies to MR volumes; this one is CT"):
        plan("synthesize", ct, bias_correction=True, force=True)
    t1 = read_volume(SAMPLE / "sample_T1w.nrrd", metadata={"modality": "MR", "contrast": "T1w"})
    result = run("synthesize", t1.with_array(np.ascontiguousarray(t1.array[40:52])), bias_correction=True)
    assert result.provenance["bias_corrected"] is True and "N4" in " ".join(result.provenance["notes"])
