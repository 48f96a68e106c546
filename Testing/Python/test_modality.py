"""One rule for "does this look like CT", one description of a volume's modality, one modality check."""

from types import SimpleNamespace

import numpy as np

from MedGANLogic.modality import declare, describe_modality, is_ct, looks_like_ct, modality_problem
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


def test_describe_modality_of_volumes_and_card_sides():
    assert describe_modality(Volume(np.ones((2, 2, 2)), metadata={"modality": "MR", "contrast": "T2w"})) == "MR T2w"
    assert describe_modality(declare(Volume(_ct_array()))) == "looks like CT (not recorded)"
    assert describe_modality(Volume(np.ones((2, 2, 2)))) == "modality not recorded"
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
