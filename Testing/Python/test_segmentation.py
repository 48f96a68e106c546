"""Segmentation U-Net: shapes, and label maps on the input grid through MedGANLogic.run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_card

from MedGANLogic import run
from MedGANLogic.models.segmentation import SegmentationUNet

TINY = {"features": [4, 4, 8, 8, 16, 4]}


def test_unet_returns_class_logits_at_input_size():
    net = SegmentationUNet(**TINY)
    y = net(torch.randn(2, 1, 48, 32))
    assert y.shape == (2, 2, 48, 32) and net.size_multiple == 16
    with pytest.raises(ValueError, match="six"):
        SegmentationUNet(features=[4, 4])


def seg_card(model_id: str) -> dict:
    return tiny_card(model_id, task="segment", tile_size=None, extras={"labels": {"1": "lesion"}},
                     architecture={"name": "seg_unet2d", "params": TINY},
                     input={"modality": "MR", "contrast": "T1w",
                            "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                              "range": [-1, 1]}},
                     output={"modality": "mask", "normalization": {"kind": "none"}})


def test_engine_writes_argmax_labels_on_the_input_grid(make_model, oblique_volume):
    torch.manual_seed(1)
    net = SegmentationUNet(**TINY)
    with torch.no_grad():  # a known answer: the lesion logit exceeds the background logit everywhere
        conv = net.unet.final_conv
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
    card = make_model(seg_card("tiny-seg"), net=net)
    result = run("segment", oblique_volume, model=card.id, device="cpu")
    labels = result.volume
    assert labels.same_geometry(oblique_volume)
    assert labels.array.dtype == np.uint8 and np.all(labels.array == 1)
    assert labels.metadata["segment_names"] == {1: "lesion"} and labels.metadata["kind"] == "labels"
    assert result.extras["voxels_per_label"] == {1: int(labels.array.sum())}


def test_hd95_is_in_millimetres():
    from MedGANLogic.evaluation.metrics import hd95

    truth = np.zeros((5, 20, 20), bool)
    truth[1:4, 5:10, 5:10] = True
    shifted = np.roll(truth, 3, axis=2)  # 3 voxels along x
    assert hd95(truth, truth, 2.0) == 0.0
    assert hd95(shifted, truth, 2.0) == pytest.approx(6.0)
    assert hd95(np.zeros_like(truth), truth, 2.0) == float("inf")


def test_shipped_model_segments_the_sample_lesions(tmp_path):
    """`medgan run --task segment` on the bundled sample FLAIR (held-out test subject) finds its lesions."""
    from conftest import SAMPLE_DATA, run_shipped_model

    from MedGANLogic.evaluation.metrics import dice
    from MedGANLogic.io import read_volume

    labels = run_shipped_model(tmp_path, "segment", "brain-lesion-seg", "sample_FLAIR.nrrd", "--modality", "MR",
                               "--contrast", "FLAIR")
    lesion = read_volume(SAMPLE_DATA / "sample_lesion_mask.nrrd").array > 0
    assert labels.same_geometry(read_volume(SAMPLE_DATA / "sample_FLAIR.nrrd"), atol=1e-5)
    assert dice(labels.array > 0, lesion) > 0.6
