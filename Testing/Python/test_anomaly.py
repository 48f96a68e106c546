"""f-AnoGAN networks and anomaly maps: shapes, per-sample scores, the engine's outputs, lesions light up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_card

from MedGANLogic import run
from MedGANLogic.models.fanogan import FAnoGAN, FAnoGANEncoder, FAnoGANGenerator

TINY = {"generator": {"latent_channels": 4, "features": 4, "levels": 3},
        "encoder": {"latent_channels": 4, "features": 4, "levels": 3},
        "critic": {"channels": 4, "layers": 3}}


def test_generator_and_encoder_are_inverse_in_shape():
    g = FAnoGANGenerator(latent_channels=4, features=4, levels=3)
    e = FAnoGANEncoder(latent_channels=4, features=4, levels=3)
    z = e(torch.randn(2, 1, 40, 24))
    assert z.shape == (2, 4, 5, 3) and z.abs().max() <= 1
    assert g.latent_shape(40, 24) == (4, 5, 3)
    x = g(z)
    assert x.shape == (2, 1, 40, 24) and x.abs().max() <= 1
    with pytest.raises(ValueError, match="multiple of 8"):
        g.latent_shape(41, 24)


def test_forward_is_reconstruction_and_scores_are_per_sample():
    torch.manual_seed(0)
    net = FAnoGAN(**TINY).eval()
    x = torch.rand(3, 1, 32, 24) * 2 - 1
    with torch.no_grad():
        recon = net(x)
        assert torch.equal(recon, net.generator(net.encoder(x)))
        together = net.slice_scores(x, recon)
        alone = torch.cat([net.slice_scores(x[i:i + 1], recon[i:i + 1]) for i in range(3)])
    assert together.shape == (3,)
    assert torch.allclose(together, alone, atol=1e-6), "a sample's score must not depend on its batch"
    assert (together > 0).all()
    with torch.no_grad():
        assert torch.allclose(net.slice_scores(x, x), torch.zeros(3), atol=1e-7)


def test_case_score_takes_the_top_slices():
    torch.manual_seed(0)
    net = FAnoGAN(**TINY, top_fraction=0.25).eval()
    vol = np.full((8, 20, 18), -1.0, np.float32)
    vol[:, 4:16, 3:15] = 0.2
    recon = vol.copy()
    assert net.case_score(vol, recon) == pytest.approx(0.0, abs=1e-7)
    recon[5, 6:10, 6:10] = -0.6  # one slice differs: top 25 % of 8 slices = 2 slices, one of them this one
    score = net.case_score(vol, recon)
    with torch.no_grad():
        one = net.slice_scores(torch.from_numpy(np.pad(vol[5:6], ((0, 0), (0, 4), (0, 6)), constant_values=-1))[None],
                               torch.from_numpy(np.pad(recon[5:6], ((0, 0), (0, 4), (0, 6)),
                                                       constant_values=-1))[None],
                               torch.from_numpy(np.pad(vol[5:6] > -0.9, ((0, 0), (0, 4), (0, 6))).astype(
                                   np.float32))[None]).item()
    assert score == pytest.approx(one / 2, rel=1e-5)


def anomaly_card(model_id: str, threshold: float | None = None) -> dict:
    extras = {"threshold": threshold} if threshold is not None else {}
    return tiny_card(model_id, task="anomaly", tile_size=None, extras=extras,
                     architecture={"name": "fanogan2d", "params": TINY},
                     input={"modality": "MR", "contrast": "T1w",
                            "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                              "range": [-1, 1]}},
                     output={"modality": "anomaly", "normalization": {"kind": "same_as_input"}})


def test_engine_outputs_map_mask_score_and_threshold(make_model, oblique_volume):
    card = make_model(anomaly_card("tiny-anomaly", threshold=0.05))
    result = run("anomaly", oblique_volume, model=card.id, device="cpu")
    amap, mask = result.outputs["anomaly_map"], result.outputs["mask"]
    assert amap.same_geometry(oblique_volume) and mask.same_geometry(oblique_volume)
    assert amap.array.dtype == np.float32 and mask.array.dtype == np.uint8
    assert np.array_equal(mask.array, (amap.array > 0.05).astype(np.uint8))
    assert result.extras["threshold"] == 0.05 and np.isfinite(result.extras["case_score"])
    assert result.provenance["case_score"] == result.extras["case_score"]
    net_score = run("anomaly", oblique_volume, model=card.id, device="cpu").extras["case_score"]
    assert net_score == result.extras["case_score"]


def test_z_score_baseline_and_metrics():
    from MedGANLogic.evaluation.baselines import RobustZScore
    from MedGANLogic.evaluation.sections.anomaly import case_auroc, voxel_auroc_ap

    rng = np.random.default_rng(0)
    spec = {"kind": "fixed", "window": [0, 100], "range": [-1, 1]}
    population = [50 + rng.normal(0, 2, (6, 10, 10)).astype(np.float32) for _ in range(8)]
    baseline = RobustZScore(spec, smoothing_mm=0.0, spacing_mm=2.0).fit(population)
    case = 50 + rng.normal(0, 2, (6, 10, 10)).astype(np.float32)
    lesion = np.zeros(case.shape, bool)
    lesion[2:4, 3:6, 3:6] = True
    case[lesion] += 30
    head = np.ones(case.shape, bool)
    zmap = baseline.map(case, head)
    assert zmap[lesion].min() > zmap[~lesion].max()
    auroc, ap = voxel_auroc_ap(zmap, lesion, head)
    assert auroc == pytest.approx(1.0) and ap == pytest.approx(1.0)
    auroc, _ = voxel_auroc_ap(-zmap, lesion, head)
    assert auroc == pytest.approx(0.0)
    assert case_auroc([3.0, 4.0], [1.0, 2.0]) == 1.0 and case_auroc([1.0, 4.0], [2.0, 3.0]) == 0.5
    assert RobustZScore.case_score(zmap, head) > RobustZScore.case_score(baseline.map(population[0], head), head)


def test_shipped_model_lights_up_the_inserted_lesions(tmp_path, capsys):
    """`medgan run --task anomaly` on the bundled sample subject (held-out test split; its lesions were inserted
    into an otherwise healthy phantom): the map is clearly higher inside the lesions than in the rest of the head
    (bright CSF is reconstructed poorly too, see the evaluation report), the candidate mask falls far more often
    on lesion voxels than elsewhere, the written mask is the map thresholded at the card's threshold, and the case
    score is printed and stored."""
    from conftest import SAMPLE_DATA, run_shipped_model

    from MedGANLogic.io import read_volume
    from MedGANLogic.models.registry import get_model

    mask_out = tmp_path / "mask.nrrd"
    amap = run_shipped_model(tmp_path, "anomaly", "brain-anomaly-t2", "sample_T2w.nrrd", "--mask-output",
                             str(mask_out), "--modality", "MR", "--contrast", "T2w", quiet=False)
    printed = capsys.readouterr().out
    mask = read_volume(mask_out)
    lesion = read_volume(SAMPLE_DATA / "sample_lesion_mask.nrrd").array > 0
    threshold = get_model("brain-anomaly-t2").extras["threshold"]
    assert amap.same_geometry(read_volume(SAMPLE_DATA / "sample_T2w.nrrd"), atol=1e-5)
    assert np.array_equal(mask.array > 0, amap.array > threshold)
    head = amap.array > 0
    inside, outside = amap.array[lesion].mean(), amap.array[head & ~lesion].mean()
    assert inside > 1.5 * outside, (inside, outside)
    assert mask.array[lesion].mean() > 10 * mask.array[head & ~lesion].mean()
    score = amap.metadata["provenance"]["case_score"]
    assert f"case_score={score}" in printed and np.isfinite(score)
