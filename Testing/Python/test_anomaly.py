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
    return tiny_card(model_id, task="anomaly", tile_size=None, extras=extras,  # MR T1w in, percentile window
                     architecture={"name": "fanogan2d", "params": TINY},
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


def test_the_map_takes_the_self_ensemble_of_the_card_or_the_option(make_model, oblique_volume):
    """The healthy reconstruction is the network averaged over flips of each slice (as for the image tasks): the
    card's extras.self_ensemble by default, the ensemble option over it; a different reconstruction, a different
    map."""
    card = anomaly_card("tiny-anomaly-ensemble", threshold=0.05)
    card["extras"]["self_ensemble"] = 2
    make_model(card)
    runs = {n: run("anomaly", oblique_volume, model=card["id"], device="cpu", **({} if n is None else {"ensemble": n}))
            for n in (None, 1, 2, 4)}
    assert [runs[n].provenance["self_ensemble"] for n in (None, 1, 2, 4)] == [2, 1, 2, 4]
    maps = {n: r.outputs["anomaly_map"].array for n, r in runs.items()}
    assert np.array_equal(maps[None], maps[2])
    assert not np.allclose(maps[1], maps[2]) and not np.allclose(maps[2], maps[4])
    for r in runs.values():
        assert np.array_equal(r.outputs["mask"].array, (r.outputs["anomaly_map"].array > 0.05).astype(np.uint8))
    from MedGANLogic.errors import ModelError
    from MedGANLogic.models.card import validate_card

    calibration = {"edges": [-1e6, 1e6], "median": [0.0], "scale": [1.0]}
    validate_card(dict(card, extras={"calibration": calibration, "self_ensemble": 4}))
    validate_card(dict(card, extras={"self_ensemble": {"cpu": 2, "cuda": 4}}))  # uncalibrated: a cheaper CPU default
    with pytest.raises(ModelError, match="one count for every device; got 2 on a CPU and 4 on a GPU"):
        validate_card(dict(card, extras={"calibration": calibration, "self_ensemble": {"cpu": 2, "cuda": 4}}))


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


def test_brain_mask_strips_scalp_and_skull_on_t1w_and_t2w():
    """The engine's brain mask (from the image alone, any contrast) against the phantom's own tissues."""
    from scipy import ndimage

    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.simulate.subjects import make_subject
    from MedGANLogic.simulate.tissue import CSF, GM, LESION, WM

    subject = make_subject(2003, spacing_mm=4.0, contrasts=("T1w", "T2w"))
    tissue = np.argmax(subject.tissues, axis=0)
    truth = np.stack([ndimage.binary_fill_holes(s) for s in np.isin(tissue, [CSF, GM, WM, LESION])])
    for contrast in ("T1w", "T2w"):
        vol = subject.volumes[contrast]
        brain = brain_mask(vol.array, vol.spacing)
        overlap = 2 * (brain & truth).sum() / (brain.sum() + truth.sum())
        assert overlap > 0.9, (contrast, overlap)
        assert (brain & ~truth & subject.head_mask).sum() < 0.08 * brain.sum(), contrast  # little scalp or skull
    assert not brain_mask(np.zeros((4, 20, 20), np.float32), (1.0, 1.0, 1.0)).any()


def test_intensity_matching_calibration_and_sign():
    from MedGANLogic.tasks.anomaly import calibrated_z, match_intensity, signed_part, smooth_inside

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.8, 0.8, (3, 30, 30)).astype(np.float32)
    lesion = np.zeros(x.shape, bool)
    lesion[1, 10:14, 10:14] = True
    recon = np.where(lesion, x - 1.0, x) + 0.2  # a shifted reconstruction without the lesion
    brain = np.ones(x.shape, bool)
    matched = match_intensity(x, recon, brain)
    assert np.allclose(matched[~lesion], x[~lesion], atol=1e-4)  # the lesion does not pull the fit
    assert np.allclose((x - matched)[lesion], 1.0, atol=1e-3)
    calibration = {"edges": [-1e6, 0.0, 1e6], "median": [0.1, -0.1], "scale": [0.5, 0.25]}
    z = calibrated_z(np.array([0.6, 0.4]), np.array([-0.5, 0.5]), calibration)
    assert np.allclose(z, [1.0, 2.0])
    assert np.array_equal(signed_part(np.array([-2.0, 1.0]), "positive"), [0.0, 1.0])
    assert np.array_equal(signed_part(np.array([-2.0, 1.0]), "negative"), [2.0, 0.0])
    assert np.array_equal(signed_part(np.array([-2.0, 1.0]), "both"), [2.0, 1.0])
    with pytest.raises(ValueError, match="residual_sign"):
        signed_part(z, "up")
    inside = np.zeros((1, 9, 9), bool)
    inside[0, 2:7, 2:7] = True
    flat = smooth_inside(np.full(inside.shape, 3.0, np.float32), inside, [0.0, 1.5, 1.5])
    assert np.allclose(flat[inside], 3.0) and not flat[~inside].any()  # nothing bleeds in from outside


def test_calibration_and_case_score_are_read_from_the_card(make_model, oblique_volume):
    """The case score is the map's 99.9th percentile as a z-score against the card's normal subjects."""
    base = {"threshold": 0.5, "residual_sign": "both",
            "calibration": {"edges": [-1e6, 0.0, 1e6], "median": [0.0, 0.0], "scale": [0.1, 0.2]}}
    scores, maps = [], []
    for i, (mean, std) in enumerate(((1.0, 2.0), (3.0, 0.5))):
        card = anomaly_card(f"tiny-calibrated-{i}")
        card["extras"] = dict(base, case_score={"percentile": 99.9, "mean": mean, "std": std})
        make_model(card)
        result = run("anomaly", oblique_volume, model=card["id"], device="cpu")
        scores.append(result.extras["case_score"])
        maps.append(result.outputs["anomaly_map"].array)
        assert result.outputs["anomaly_map"].metadata["units"] == "z-score of the residual"
    assert np.array_equal(maps[0], maps[1])
    assert scores[0] * 2.0 + 1.0 == pytest.approx(scores[1] * 0.5 + 3.0, rel=1e-5)  # one statistic, two scales
    uncalibrated = make_model(anomaly_card("tiny-uncalibrated", threshold=0.5))
    raw = run("anomaly", oblique_volume, model=uncalibrated.id, device="cpu").outputs["anomaly_map"].array
    assert not np.allclose(raw, maps[0])
    residual = run("anomaly", oblique_volume, model=uncalibrated.id, device="cpu", residual=True)
    assert set(residual.outputs) == {"anomaly_map", "reconstruction"}
    assert (residual.outputs["anomaly_map"].array < 0).any()  # signed


def _phantom_volume(seed: int, contrast: str, healthy: bool):
    from MedGANLogic.train.data import phantom_subject_arrays
    from MedGANLogic.volume import Volume

    arrays = phantom_subject_arrays(seed, [contrast, "lesion_mask"], 2.0, healthy=healthy)
    return (Volume(arrays[contrast], spacing=(2.0, 2.0, 2.0), metadata={"modality": "MR", "contrast": contrast}),
            arrays["lesion_mask"] > 0)


def test_shipped_t2_model_finds_lesions_of_a_held_out_subject_and_ranks_it_above_its_twin():
    """A held-out test subject (not seen in training or calibration) and its lesion-free twin: the map is higher
    in the lesions than in the rest of the brain, and the case score ranks the lesioned subject above its twin."""
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.train.data import split_seeds

    seed = split_seeds("test")[1]
    vol, lesion = _phantom_volume(seed, "T2w", healthy=False)
    twin, _ = _phantom_volume(seed, "T2w", healthy=True)
    result = run("anomaly", vol, model="brain-anomaly-t2", device="cpu", precision="fp32")
    amap = result.outputs["anomaly_map"].array
    brain = amap > 0
    assert amap[lesion].mean() > 2.0 * amap[brain & ~lesion].mean()
    twin_score = run("anomaly", twin, model="brain-anomaly-t2", device="cpu", precision="fp32").extras["case_score"]
    assert result.extras["case_score"] > twin_score
    extras = get_model("brain-anomaly-t2").extras
    assert {"calibration", "case_score", "threshold", "residual_sign"} <= set(extras)
    assert result.extras["threshold"] == extras["threshold"]


def test_shipped_model_lights_up_the_inserted_lesions(tmp_path, capsys):
    """`medgan run --task anomaly` on the bundled sample subject (held-out test split; its lesions were inserted
    into an otherwise healthy phantom): the map is clearly higher inside the lesions than in the rest of the brain,
    the candidate mask falls far more often on lesion voxels than elsewhere, the written mask is the map
    thresholded at the card's threshold, and the case score is printed and stored. The T1w sample runs through
    brain-anomaly-t1 the same way (map, mask and score written)."""
    from conftest import SAMPLE_DATA, run_shipped_model

    from MedGANLogic.io import read_volume
    from MedGANLogic.models.registry import get_model

    lesion = read_volume(SAMPLE_DATA / "sample_lesion_mask.nrrd").array > 0
    for model, contrast in (("brain-anomaly-t2", "T2w"), ("brain-anomaly-t1", "T1w")):
        if model == "brain-anomaly-t1":  # T1w: the CLI contract only (its phantom lesion detection: see the report)
            amap = run_shipped_model(tmp_path, "anomaly", model, "sample_T1w.nrrd", "--mask-output",
                                     str(tmp_path / "t1-mask.nrrd"), "--modality", "MR", "--contrast", "T1w")
            mask = read_volume(tmp_path / "t1-mask.nrrd")
            assert np.array_equal(mask.array > 0, amap.array > get_model(model).extras["threshold"])
            assert (amap.array >= 0).all() and amap.array.max() > 0
            assert np.isfinite(amap.metadata["provenance"]["case_score"])
            continue
        mask_out = tmp_path / f"mask-{model}.nrrd"
        amap = run_shipped_model(tmp_path, "anomaly", model, f"sample_{contrast}.nrrd", "--mask-output",
                                 str(mask_out), "--modality", "MR", "--contrast", contrast, quiet=False)
        printed = capsys.readouterr().out
        mask = read_volume(mask_out)
        threshold = get_model(model).extras["threshold"]
        assert amap.same_geometry(read_volume(SAMPLE_DATA / f"sample_{contrast}.nrrd"), atol=1e-5)
        assert np.array_equal(mask.array > 0, amap.array > threshold)
        brain = amap.array > 0
        inside, outside = amap.array[lesion].mean(), amap.array[brain & ~lesion].mean()
        assert inside > 2.0 * outside, (model, inside, outside)
        assert mask.array[lesion].mean() > 10 * mask.array[brain & ~lesion].mean(), model
        score = amap.metadata["provenance"]["case_score"]
        assert f"case_score={score}" in printed and np.isfinite(score)


def test_the_brain_rim_is_left_out_and_a_wide_spread_scan_is_scaled_down():
    """inner_region keeps the voxels farther than edge_mm (in mm, per axis spacing) from outside the region, and
    never the outermost voxel along an axis spaced wider than edge_mm (it straddles the surface); scan_z divides a
    scan's z-scores by how much wider than the calibration's they spread, never multiplies."""
    from MedGANLogic.tasks.anomaly import inner_region, robust_spread, scan_z

    region = np.zeros((12, 12, 12), bool)
    region[1:11, 1:11, 1:11] = True
    assert inner_region(region, (1.0, 1.0, 1.0), 0.0) is region
    inner = inner_region(region, (1.0, 1.0, 1.0), 2.0)  # distances 1 and 2 mm go, 3 mm stays
    assert inner[3:9, 3:9, 3:9].all() and inner.sum() == 6 ** 3
    thick = inner_region(region, (3.0, 1.0, 1.0), 2.0)  # 3 mm slices: the outermost straddles the surface, goes
    assert thick[2:10, 3:9, 3:9].all() and thick.sum() == 8 * 6 * 6
    assert inner_region(region, (2.0, 1.0, 1.0), 2.0).sum() == 8 * 6 * 6  # 2 mm in: within the rim
    assert inner_region(region, (1.0, 1.0, 1.0), 0.5).sum() == 8 ** 3  # a rim thinner than a voxel: one voxel
    full = np.ones((4, 4, 4), bool)  # the array's border counts as outside
    assert not inner_region(full, (1.0, 1.0, 1.0), 1.0)[0].any()
    # the same voxels as a distance transform's (as the map's rim was first made), less the outermost voxel along
    # every axis, on random anisotropic brains; exactly the distance transform's where no spacing exceeds edge_mm
    from scipy import ndimage

    outermost = ndimage.generate_binary_structure(3, 1)

    rng = np.random.default_rng(4)
    for _ in range(8):
        blob = ndimage.gaussian_filter(rng.random((10, 40, 40)), 3.0) > 0.48
        spacing, edge = tuple(rng.uniform(0.5, 6.0, 3)), float(rng.uniform(0.5, 8.0))
        by_distance = ndimage.distance_transform_edt(np.pad(blob, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] > edge
        inner = inner_region(blob, spacing, edge)
        assert np.array_equal(inner, by_distance & ndimage.binary_erosion(blob, outermost, border_value=0))
        if max(spacing) <= edge:
            assert np.array_equal(inner, by_distance)

    rng = np.random.default_rng(0)
    calibration = {"edges": [-1e6, 1e6], "median": [0.0], "scale": [1.0], "spread": 1.0}
    brain = np.ones((8, 32, 32), bool)
    wide = rng.normal(0.0, 3.0, brain.shape).astype(np.float32)
    z, ratio = scan_z(wide, np.zeros_like(wide), calibration, brain)
    assert ratio == pytest.approx(3.0, rel=0.05) and robust_spread(z[brain]) == pytest.approx(1.0, rel=1e-4)
    narrow = wide / 6.0
    z, ratio = scan_z(narrow, np.zeros_like(narrow), calibration, brain)
    assert ratio == pytest.approx(0.5, rel=0.05) and np.array_equal(z, narrow)  # never amplified
    z, ratio = scan_z(wide, np.zeros_like(wide), {k: v for k, v in calibration.items() if k != "spread"}, brain)
    assert ratio == 1.0 and np.array_equal(z, wide)  # an older calibration without the record: unchanged


def test_shipped_t2_map_leaves_out_the_brain_rim_and_reports_the_spread():
    """The shipped card's edge_mm: on the bundled T2w sample the map is zero in the brain's outer rim (the voxels
    within edge_mm - 1 voxel of the brain's edge, allowing for the return to the input grid) and not zero
    there with edge_mm=0; the spread ratio is in the run's extras and the map's metadata."""
    from conftest import SAMPLE_DATA

    from MedGANLogic.io import read_volume
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.normalization import brain_mask

    vol = read_volume(SAMPLE_DATA / "sample_T2w.nrrd")
    edge = float(get_model("brain-anomaly-t2").extras["edge_mm"])
    assert edge > 0
    result = run("anomaly", vol, model="brain-anomaly-t2", device="cpu", precision="fp32")
    amap = result.outputs["anomaly_map"].array
    brain = brain_mask(vol.array, vol.spacing)
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(brain, 1), sampling=vol.spacing[::-1])[1:-1, 1:-1, 1:-1]
    rim = brain & (depth <= edge - max(vol.spacing))
    assert rim.sum() > 1000 and not amap[rim].any()
    assert amap[brain & ~rim].any()
    unrimmed = run("anomaly", vol, model="brain-anomaly-t2", device="cpu", precision="fp32", edge_mm=0.0)
    assert unrimmed.outputs["anomaly_map"].array[rim].any()
    assert np.isfinite(result.extras["spread_ratio"]) and result.extras["spread_ratio"] > 0
    assert result.outputs["anomaly_map"].metadata["spread_ratio"] == pytest.approx(result.extras["spread_ratio"],
                                                                                   abs=1e-4)


def test_calibration_records_the_spread_and_keeps_normal_brains_nearly_unflagged(make_model):
    """calibrate() on phantom validation subjects (one normal, one with lesions, 4 mm): the card gets the residual
    bins and the normal z-score spread, a sign, and a threshold that is the Dice-best one raised to the level at most
    0.1 % of the normal brain exceeds, measured with the card's self-ensemble; the engine with that card flags at
    most 0.1 % of that normal brain."""
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.train.anomaly_calibration import NORMAL_FLAGGED, calibrate, phantom_subject

    card = anomaly_card("tiny-to-calibrate")
    card["extras"] = {"smoothing_mm": 4.0, "edge_mm": 4.0, "self_ensemble": 2}
    folder = make_model(card).folder
    extras = calibrate(folder, "T1w", normal_seeds=[1004], lesion_seeds=[1000], spacing_mm=4.0)
    assert extras == get_model(folder).extras
    assert extras["self_ensemble"] == extras["validation"]["self_ensemble"] == 2  # measured with the card's passes
    cal, chosen = extras["calibration"], extras["threshold_selection"]
    assert cal["spread"] > 0 and len(cal["median"]) == len(cal["scale"]) == len(cal["edges"]) - 1
    assert extras["residual_sign"] in ("positive", "both") and extras["edge_mm"] == 4.0
    assert extras["threshold"] == pytest.approx(max(chosen["dice_best"], chosen["normal_level"]), abs=1e-3)
    normal, _ = phantom_subject(1004, "T1w", True, 4.0)
    result = run("anomaly", normal, model=str(folder), device="cpu", precision="fp32")
    brain = brain_mask(normal.array, normal.spacing)
    assert (result.outputs["anomaly_map"].array[brain] > extras["threshold"]).mean() <= NORMAL_FLAGGED + 1e-9


def test_thick_slice_calibration_set_is_the_nearest_to_the_scan_slices(make_model, oblique_volume):
    """for_slices picks the card's own set or one of extras.slice_calibrations, nearest on a log scale; the engine
    applies its threshold and case score and says which thickness it used."""
    from MedGANLogic.tasks.anomaly import for_slices
    from MedGANLogic.volume import Volume

    cal = {"edges": [-1e6, 0.0, 1e6], "median": [0.0, 0.0], "scale": [0.1, 0.2]}
    extras = {"threshold": 0.5, "residual_sign": "both", "calibration": cal,
              "case_score": {"statistic": "fraction_above_threshold", "mean": 0.0, "std": 1.0},
              "slice_calibrations": [
                  {"slice_mm": 4.0, "calibration": cal, "threshold": 0.7,
                   "case_score": {"statistic": "fraction_above_threshold", "mean": 0.5, "std": 1.0}},
                  {"slice_mm": 6.0, "calibration": cal, "threshold": 1e6,
                   "case_score": {"statistic": "fraction_above_threshold", "mean": 1.0, "std": 2.0}}]}
    picked = {mm: for_slices(extras, mm)["calibration_slice_mm"] for mm in (1.0, 2.0, 2.5, 3.0, 4.5, 5.0, 6.5, 9.0)}
    assert picked == {1.0: 2.0, 2.0: 2.0, 2.5: 2.0, 3.0: 4.0, 4.5: 4.0, 5.0: 6.0, 6.5: 6.0, 9.0: 6.0}
    assert for_slices(extras, 6.5)["threshold"] == 1e6 and "slice_calibrations" not in for_slices(extras, 6.5)
    assert for_slices({"threshold": 0.5}, 6.5) == {"threshold": 0.5}  # an uncalibrated card: nothing to choose
    card = anomaly_card("tiny-slice-calibrated")
    card["extras"] = extras
    make_model(card)
    results = {}
    for mm in (2.0, 6.0):
        vol = Volume(oblique_volume.array, spacing=(1.0, 1.0, mm), metadata=dict(oblique_volume.metadata))
        results[mm] = run("anomaly", vol, model=card["id"], device="cpu")
    thin, thick = results[2.0], results[6.0]
    assert thin.extras["calibration_slice_mm"] == 2.0 and thin.extras["threshold"] == 0.5
    assert thin.outputs["anomaly_map"].metadata["calibration_slice_mm"] == 2.0
    assert thick.extras["calibration_slice_mm"] == 6.0 and thick.extras["threshold"] == 1e6
    assert thick.extras["candidate_voxels"] == 0 and thin.extras["candidate_voxels"] > 0
    assert thick.extras["case_score"] == pytest.approx(-0.5)  # nothing above 1e6: (0 - 1) / 2
    assert "calibrated at 6 mm slices" in " ".join(thick.provenance["notes"])
    assert "calibrated at 2 mm slices" in " ".join(thin.provenance["notes"])
    # slice_axis=2: the model slices along x, whose voxels are 1 mm here, not the 6 mm slices along z
    thick_z = Volume(oblique_volume.array, spacing=(1.0, 1.0, 6.0), metadata=dict(oblique_volume.metadata))
    across = run("anomaly", thick_z, model=card["id"], device="cpu", slice_axis=2)
    assert across.extras["calibration_slice_mm"] == 2.0 and across.extras["threshold"] == 0.5
    assert "calibrated at 2 mm slices" in " ".join(across.provenance["notes"])


def test_card_refuses_a_malformed_thick_slice_set():
    from MedGANLogic.errors import ModelError
    from MedGANLogic.models.card import validate_card

    card = anomaly_card("tiny-bad-slices", threshold=0.5)
    good = {"slice_mm": 6.0, "calibration": {"edges": [-1e6, 1e6], "median": [0.0], "scale": [1.0]},
            "threshold": 1.0, "case_score": {"statistic": "fraction_above_threshold"}}
    validate_card(dict(card, extras={"slice_calibrations": [good]}))
    for bad, field in (({**good, "slice_mm": 0}, "slice_mm"), ({**good, "calibration": {"edges": [0.0]}},
                                                                 "calibration"),
                       ({**good, "threshold": "high"}, "threshold")):
        with pytest.raises(ModelError, match=rf"slice_calibrations\[0\].*{field}"):
            validate_card(dict(card, extras={"slice_calibrations": [bad]}))
    with pytest.raises(ModelError, match="calibration_slice_mm"):
        validate_card(dict(card, extras={"calibration_slice_mm": -2}))


def test_thick_slices_average_groups_of_slices():
    from MedGANLogic.train.anomaly_calibration import thick_slices
    from MedGANLogic.volume import Volume

    array = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    lesion = np.zeros(array.shape, bool)
    lesion[0:2, 0, 0] = True  # two of the first three slices: the first thick slice's voxel
    lesion[3, 1, 1] = True  # one of the next three: not
    vol = Volume(array, spacing=(0.5, 0.7, 2.0), origin=(1.0, 2.0, 3.0), metadata={"modality": "MR"})
    thick, mask = thick_slices(vol, lesion, 3)
    assert thick.shape == (2, 2, 3) and thick.spacing == pytest.approx((0.5, 0.7, 6.0))
    assert np.allclose(thick.array, [array[0:3].mean(0), array[3:6].mean(0)])
    assert thick.origin == pytest.approx(vol.origin) and np.allclose(thick.direction, vol.direction)
    assert mask[0, 0, 0] and not mask[1, 1, 1] and mask.sum() == 1
    assert thick_slices(vol, lesion, 1)[0] is vol


def test_calibrate_slices_adds_thick_sets_that_keep_a_thick_normal_brain_nearly_unflagged(make_model):
    """calibrate_slices() after calibrate() (phantoms at 4 mm, made 8 mm thick): the card keeps its own set and
    sign and gains one at 8 mm; an 8 mm normal brain gets it and at most 0.1 % of it is flagged."""
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.train.anomaly_calibration import (
        NORMAL_FLAGGED,
        calibrate,
        calibrate_slices,
        phantom_subject,
        thick_slices,
    )

    card = anomaly_card("tiny-to-calibrate-thick")
    card["extras"] = {"smoothing_mm": 4.0, "edge_mm": 4.0}
    folder = make_model(card).folder
    with pytest.raises(ValueError, match="calibrate"):
        calibrate_slices(folder, "T1w", (8.0,), spacing_mm=4.0)
    seeds = {"normal_seeds": [1004], "lesion_seeds": [1000]}
    own = calibrate(folder, "T1w", spacing_mm=4.0, **seeds)
    with pytest.raises(ValueError, match="multiple"):
        calibrate_slices(folder, "T1w", (6.0,), spacing_mm=4.0, **seeds)
    extras = calibrate_slices(folder, "T1w", (8.0,), spacing_mm=4.0, **seeds)
    assert extras == get_model(folder).extras and extras["calibration_slice_mm"] == 4.0
    assert all(extras[k] == own[k] for k in ("calibration", "threshold", "case_score", "residual_sign"))
    (thick_set,) = extras["slice_calibrations"]
    assert thick_set["slice_mm"] == 8.0 and thick_set["calibration"] != own["calibration"]
    normal, _ = thick_slices(*phantom_subject(1004, "T1w", True, 4.0), 2)
    result = run("anomaly", normal, model=str(folder), device="cpu", precision="fp32")
    assert result.extras["calibration_slice_mm"] == 8.0 and result.extras["threshold"] == thick_set["threshold"]
    brain = brain_mask(normal.array, normal.spacing)
    assert (result.outputs["anomaly_map"].array[brain] > thick_set["threshold"]).mean() <= NORMAL_FLAGGED + 1e-9
    assert "slice_calibrations" not in calibrate(folder, "T1w", spacing_mm=4.0, **seeds)  # they go with the calibration


def test_check_case_score_writes_the_case_auroc_of_further_phantom_pairs(make_model):
    """check_case_score runs the engine on phantoms with lesions and their twins from seeds outside every split and
    records the AUROC on the card; a seed of a split is refused."""
    from MedGANLogic.evaluation.metrics import auroc
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.train.anomaly_calibration import check_case_score

    assert auroc([3.0, 2.0, 1.0, 2.0], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)  # one tie counts half
    assert auroc([1.0, 2.0], [1, 0]) == 0.0
    card = anomaly_card("tiny-case-check", threshold=0.05)
    folder = make_model(card).folder
    with pytest.raises(ValueError, match="split"):
        check_case_score(folder, "T1w", [1000], spacing_mm=4.0)
    with pytest.raises(ValueError, match="at least one"):
        check_case_score(folder, "T1w", [], spacing_mm=4.0)
    extras = check_case_score(folder, "T1w", [1010, 1011], spacing_mm=4.0)
    got = get_model(folder).extras["validation"]["case_auroc"]
    assert got == extras["validation"]["case_auroc"] and got["seeds"] == [1010, 1011] and got["pairs"] == 2
    assert 0.0 <= got["auroc"] <= 1.0 and 0.0 <= got["above_own_twin"] <= 1.0
    assert 0 < got["lesion_ml"][0] <= got["lesion_ml"][1] <= got["lesion_ml"][2]
    assert extras["threshold"] == 0.05  # nothing else on the card changes


def test_learned_brain_mask_finds_the_intracranial_space_of_a_held_out_phantom():
    """The shipped brain-mask model (trained on domain-randomised heads only) on a held-out test phantom, T1w and
    T2w at 4 mm (the engine resamples to its 2 mm): Dice with the phantom's intracranial space (CSF, grey and white
    matter, lesions, holes filled) at least 0.9 and above the morphological mask's, little scalp or skull; the
    anomaly region of a card naming it is that mask, and the run says where its brain came from."""
    from scipy import ndimage

    from MedGANLogic.models.registry import get_model
    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.simulate.subjects import make_subject
    from MedGANLogic.simulate.tissue import CSF, GM, LESION, WM
    from MedGANLogic.tasks.anomaly import anomaly_region, brain_region, learned_brain

    subject = make_subject(2004, spacing_mm=4.0, contrasts=("T1w", "T2w"))
    tissue = np.argmax(subject.tissues, axis=0)
    truth = np.stack([ndimage.binary_fill_holes(s) for s in np.isin(tissue, [CSF, GM, WM, LESION])])

    def overlap(mask):
        return 2 * (mask & truth).sum() / (mask.sum() + truth.sum())

    card = get_model("brain-anomaly-t1")
    assert card.extras["brain_mask_model"] == "brain-mask"
    for contrast in ("T1w", "T2w"):
        vol = subject.volumes[contrast]
        learned = learned_brain(vol, "brain-mask")
        assert overlap(learned) >= 0.9, (contrast, overlap(learned))
        assert overlap(learned) > overlap(brain_mask(vol.array, vol.spacing)) - 0.01, contrast
        assert (learned & ~truth & subject.head_mask).sum() < 0.08 * learned.sum(), contrast
    assert np.array_equal(anomaly_region(vol, card), learned)
    source = brain_region(vol, card)[1]
    assert source.startswith("brain-mask ")
    result = run("anomaly", subject.volumes["T1w"], model="brain-anomaly-t1", device="cpu")
    assert result.extras["brain_mask"] == source


def test_learned_brain_mask_leaves_out_the_eyes_and_sinuses_of_a_held_out_head():
    """The shipped brain-mask model on held-out domain-randomised heads with a face (seeds outside its training
    seed, thick axial slices as clinical T1w has them): the eyes and what lies within 6 mm outside the brain
    (skull, orbital roof, sinus walls, skull base) are not brain. The template it was first trained on had no
    face, and 1.0.0 took orbits and nasal cavity in on real thick-slice T1w."""
    from scipy import ndimage

    from MedGANLogic.simulate.anatomy import sample_anatomy
    from MedGANLogic.simulate.randomize import DomainRanges, random_sample
    from MedGANLogic.tasks.anomaly import learned_brain

    ranges = DomainRanges(face=1.0, slice_axes=(0,), slice_mm=(5.0, 7.0), partial_fov=0.0, orderings=("T1w", "T2w"))
    for seed in (4243, 4244):
        anatomy = sample_anatomy(np.random.default_rng(seed), ranges, (96, 112, 96), 2.0)
        s = random_sample("brainmask", np.random.default_rng(seed + 1), ranges=ranges, anatomy=anatomy)
        truth = s["target"].array > 0
        learned = learned_brain(s["input"], "brain-mask")
        eyes = anatomy.extracranial > 0.5
        near = ndimage.binary_dilation(truth, iterations=3) & ~truth & (s["labels"].array > 0)
        assert 2 * (learned & truth).sum() / (learned.sum() + truth.sum()) >= 0.9, seed
        assert (learned & eyes).sum() < 0.05 * eyes.sum(), (seed, (learned & eyes).sum() / eyes.sum())
        assert (learned & near).sum() < 0.15 * near.sum(), (seed, (learned & near).sum() / near.sum())


def test_a_cancel_while_the_brain_mask_model_runs_stops_the_anomaly_run():
    """The brain extraction model runs after the anomaly network, as a run of its own: the anomaly run's cancel
    reaches it. A cancel set once the anomaly network has finished (its progress at 1) ends the run there with
    CancelledError; without the cancel the same run completes."""
    import threading

    from MedGANLogic.errors import CancelledError
    from MedGANLogic.simulate.subjects import make_subject

    vol = make_subject(2004, spacing_mm=4.0, contrasts=("T1w",)).volumes["T1w"]
    stop, seen = threading.Event(), []

    def progress(fraction, message=""):
        seen.append(fraction)
        if fraction >= 1.0:
            stop.set()

    with pytest.raises(CancelledError):
        run("anomaly", vol, model="brain-anomaly-t1", device="cpu", progress=progress, cancel=stop)
    assert stop.is_set() and max(seen) >= 1.0  # the anomaly network had finished: the mask run was cancelled
    done = run("anomaly", vol, model="brain-anomaly-t1", device="cpu", cancel=threading.Event())
    assert "anomaly_map" in done.outputs


def test_a_brain_mask_model_that_is_not_installed_falls_back_and_says_so(make_model, oblique_volume):
    """A card naming a brain extraction model that is not installed: the morphological mask, and a note."""
    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.tasks.anomaly import anomaly_region

    card = anomaly_card("tiny-anomaly-masked", threshold=0.05)
    card["extras"]["brain_mask_model"] = "no-such-mask-model"
    model = make_model(card)
    result = run("anomaly", oblique_volume, model=model.id, device="cpu")
    assert "'no-such-mask-model' is not installed" in " ".join(result.provenance["notes"])
    assert result.extras["brain_mask"].startswith("intensity and morphology")
    assert np.array_equal(anomaly_region(oblique_volume, model),
                          brain_mask(oblique_volume.array, oblique_volume.spacing))


def test_a_rim_calibration_maps_the_brain_rim_against_its_own_normal_residuals():
    """region_z: without calibration.rim the map is made inside the inner region only (the rim left out); with it,
    the rim's residuals are z-scored by the rim's own bins (larger normal residuals there: a smaller z for the same
    residual) and the map is made over the whole brain."""
    from MedGANLogic.tasks.anomaly import inner_region, region_z

    region = np.zeros((10, 10, 10), bool)
    region[1:9, 1:9, 1:9] = True
    inner = inner_region(region, (1.0, 1.0, 1.0), 2.0)
    residual = np.where(region, 0.3, 0.0).astype(np.float32)
    recon = np.zeros_like(residual)
    bins = {"edges": [-1e6, 1e6], "median": [0.0], "scale": [0.1]}
    z, ratio, mapped = region_z(residual, recon, bins, inner, region)
    assert mapped is inner and ratio == 1.0 and np.allclose(z[inner], 3.0)
    with_rim = dict(bins, rim={"edges": [-1e6, 1e6], "median": [0.0], "scale": [0.3]})
    z, _, mapped = region_z(residual, recon, with_rim, inner, region)
    rim = region & ~inner
    assert mapped is region and rim.any() and np.allclose(z[rim], 1.0) and np.allclose(z[inner], 3.0)


def test_detrend_takes_a_smooth_field_out_of_the_residual_and_keeps_a_lesion():
    """detrend: a bowl-shaped shading plus a lesion of 6 mm radius; the degree-2 fit (robust: the lesion falls out of
    it) removes the shading everywhere in the brain and leaves the lesion's residual; degree 0 changes nothing, and
    nothing is written outside the region."""
    from MedGANLogic.tasks.anomaly import detrend, inner_region

    shape, spacing = (12, 40, 40), (3.0, 2.0, 2.0)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [n * s / 2 for n, s in zip(shape, spacing)]
    r2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    region = r2 < 34.0 ** 2
    shading = 0.3 - 0.4 * r2 / 34.0 ** 2 + 0.002 * (x - centre[2])
    lesion = (z - 15.0) ** 2 + (y - 30.0) ** 2 + (x - 52.0) ** 2 < 6.0 ** 2
    residual = np.where(region, shading + 0.5 * lesion, 0.0).astype(np.float32)
    residual += np.where(region, np.random.default_rng(0).normal(0, 0.02, shape), 0.0).astype(np.float32)
    inner = inner_region(region, spacing, 4.0)
    out = detrend(residual, region, inner, spacing, 2)
    assert not out[~region].any()
    normal = region & ~lesion
    assert np.abs(residual[normal]).mean() > 0.1 and np.abs(out[normal]).mean() < 0.025  # the shading is gone
    assert out[lesion].mean() == pytest.approx(0.5, abs=0.05)  # the lesion is not
    assert detrend(residual, region, inner, spacing, 0) is residual
    linear = detrend(residual, region, inner, spacing, 1)  # a plane cannot follow the bowl
    assert np.abs(linear[normal]).mean() > 0.05


def test_the_detrend_of_the_card_or_the_option_reaches_the_map(make_model, oblique_volume):
    """extras.residual_detrend on a card, or the detrend option, changes the residual the map is made of; the option
    wins over the card; a degree outside 0-3 is refused, naming the option."""
    from MedGANLogic.errors import MedGANError

    card = make_model(anomaly_card("tiny-detrend", threshold=0.5))
    plain = run("anomaly", oblique_volume, model=card.id, device="cpu", residual=True)
    fitted = run("anomaly", oblique_volume, model=card.id, device="cpu", residual=True, detrend=2)
    a, b = plain.outputs["anomaly_map"].array, fitted.outputs["anomaly_map"].array
    assert not np.allclose(a, b) and np.array_equal(a != 0, b != 0)  # the same brain, another residual
    spec = anomaly_card("tiny-detrend-card", threshold=0.5)
    spec["extras"]["residual_detrend"] = 2
    on_card = make_model(spec)
    from_card = run("anomaly", oblique_volume, model=on_card.id, device="cpu", residual=True)
    assert np.array_equal(from_card.outputs["anomaly_map"].array, b)
    off = run("anomaly", oblique_volume, model=on_card.id, device="cpu", residual=True, detrend=0)
    assert np.array_equal(off.outputs["anomaly_map"].array, a)
    mapped = run("anomaly", oblique_volume, model=on_card.id, device="cpu")  # the degree is recorded with the map
    assert mapped.extras["detrend_degree"] == 2 and off.extras["detrend_degree"] == 0
    assert mapped.outputs["anomaly_map"].metadata["detrend_degree"] == 2
    with pytest.raises(MedGANError, match="detrend"):
        run("anomaly", oblique_volume, model=card.id, device="cpu", detrend=5)


def test_a_stack_too_thin_to_map_warns_that_the_map_is_empty():
    """Three 6.5 mm slices through a brain: the map leaves out the brain's outermost slice at each end (thicker than
    the 4 mm rim) and its outer 4 mm in-plane; one slice is all that a 3-slice stack keeps, a single slice keeps
    nothing, and the run says why instead of returning a silent zero map."""
    from MedGANLogic.errors import MedGANWarning
    from MedGANLogic.train.anomaly_calibration import phantom_subject

    vol, _ = phantom_subject(1010, "T1w", True, 2.0)
    thick = vol.with_array(np.ascontiguousarray(vol.array[40:41]), spacing=(2.0, 2.0, 6.5))
    with pytest.warns(MedGANWarning, match="the anomaly map is empty.*all its slices"):
        result = run("anomaly", thick, model="brain-anomaly-t1", device="cpu")
    assert not result.outputs["anomaly_map"].array.any()
    assert "all its slices" in result.extras["empty_map"]
    from MedGANLogic.slicer_bridge.running import describe_result

    assert "warning: the anomaly map is empty" in describe_result(result)  # the panel's status line says it
    whole = run("anomaly", vol, model="brain-anomaly-t1", device="cpu")  # the whole brain: mapped, no such note
    assert whole.outputs["anomaly_map"].array.any() and "empty_map" not in whole.extras


def test_detrend_in_chunks_is_the_detrend_in_one(monkeypatch):
    """The field is evaluated over the brain in chunks (bounded memory at native resolution): the same values."""
    import MedGANLogic.tasks.anomaly as anomaly

    rng = np.random.default_rng(1)
    region = np.zeros((8, 30, 30), bool)
    region[1:7, 4:26, 4:26] = True
    residual = np.where(region, rng.normal(0, 0.1, region.shape) + np.linspace(0, 0.5, 30), 0).astype(np.float32)
    whole = anomaly.detrend(residual, region, region, (3.0, 1.0, 1.0), 2)
    monkeypatch.setattr(anomaly, "DETREND_CHUNK", 997)
    chunked = anomaly.detrend(residual, region, region, (3.0, 1.0, 1.0), 2)
    assert np.allclose(chunked, whole, atol=1e-6) and not chunked[~region].any()
    assert np.abs(whole[region]).mean() < np.abs(residual[region]).mean()  # the ramp is gone


def test_the_restoration_gradient_is_taken_in_the_plane_the_model_restored():
    """restoration_gradient: a ramp across a slice has the ramp's slope as its gradient (per pixel) away from the
    border; a ramp through the slices (along the slice axis) has none."""
    from MedGANLogic.tasks.anomaly import restoration_gradient

    z, y, x = np.mgrid[0:8, 0:30, 0:30].astype(np.float32)
    in_plane = restoration_gradient(0.02 * x, slice_axis=0)
    assert np.allclose(in_plane[:, 5:-5, 5:-5], 0.02, rtol=1e-3)
    assert np.allclose(restoration_gradient(0.02 * z, slice_axis=0), 0.0, atol=1e-7)
    assert np.allclose(restoration_gradient(0.02 * x, slice_axis=2), 0.0, atol=1e-7)  # sagittal slices: x is across
    diagonal = restoration_gradient(0.03 * x + 0.04 * y, slice_axis=0)
    assert np.allclose(diagonal[:, 5:-5, 5:-5], 0.05, rtol=1e-3)


def test_residual_bins_split_by_the_restoration_gradient():
    """residual_bins with gradient_bins: within one intensity, the normal residual spreads 4x wider where the
    restoration's gradient is high (a boundary the blurred restoration misses); the table's scale says so and
    calibrated_z divides by it, so the same residual scores lower at a boundary than in smooth tissue. Without
    gradient bins the lists are those of before (one scale per intensity bin)."""
    from MedGANLogic.tasks.anomaly import calibrated_z
    from MedGANLogic.train.anomaly_calibration import residual_bins

    rng = np.random.default_rng(1)
    n = 40_000
    recon = rng.uniform(-0.5, 0.5, n)
    gradient = np.where(np.arange(n) % 2 == 0, 0.01, 0.2)
    residual = rng.normal(0.0, np.where(gradient > 0.1, 0.2, 0.05))
    flat = residual_bins([recon], [residual], bins=2)
    assert set(flat) == {"edges", "median", "scale"} and all(isinstance(v, float) for v in flat["scale"])
    assert all(0.06 < v < 0.15 for v in flat["scale"])  # one robust spread for the mixture of both
    split = residual_bins([recon], [residual], bins=2, gradients=[gradient], gradient_bins=2)
    scale = np.asarray(split["scale"])
    assert scale.shape == (2, 2) and len(split["grad_edges"]) == 3
    assert np.allclose(scale[:, 0], 0.05, rtol=0.1) and np.allclose(scale[:, 1], 0.2, rtol=0.1)
    z = calibrated_z(np.array([0.3, 0.3]), np.array([0.0, 0.0]), split, np.array([0.01, 0.2]))
    assert z[0] == pytest.approx(0.3 / scale[1, 0], rel=0.05) and z[0] > 3 * z[1]
    with pytest.raises(ValueError, match="gradient"):
        calibrated_z(np.array([0.3]), np.array([0.0]), split)
    with pytest.raises(ValueError, match="gradients"):
        residual_bins([recon], [residual], bins=2, gradient_bins=2)


def test_a_gradient_calibration_reaches_the_engines_map(make_model, oblique_volume):
    """A card whose calibration bins by the restoration's gradient: with equal columns its map is the map of the
    same calibration without them (the engine computes the gradient and indexes the tables as the calibration
    does); with a wider scale where the gradient is high, the map is nowhere higher and somewhere lower. A table of
    the wrong shape is refused when the card is read, naming extras.calibration."""
    from MedGANLogic.errors import ModelError
    from MedGANLogic.models.card import validate_card

    flat = {"edges": [-1e6, 0.0, 1e6], "median": [0.0, 0.0], "scale": [0.1, 0.2]}
    same = dict(flat, grad_edges=[-1e6, 0.05, 1e6], median=[[0.0, 0.0], [0.0, 0.0]], scale=[[0.1, 0.1], [0.2, 0.2]])
    wider = dict(same, scale=[[0.1, 0.4], [0.2, 0.8]])
    maps = []
    for name, cal in (("flat", flat), ("same", same), ("wider", wider)):
        card = anomaly_card(f"tiny-gradient-{name}")
        card["extras"] = {"threshold": 0.5, "residual_sign": "both", "calibration": cal}
        make_model(card)
        maps.append(run("anomaly", oblique_volume, model=card["id"], device="cpu").outputs["anomaly_map"].array)
    assert np.array_equal(maps[0], maps[1])
    assert (maps[2] <= maps[0] + 1e-6).all() and (maps[2] < maps[0] - 1e-3).any()
    card = anomaly_card("tiny-gradient-bad", threshold=0.5)
    with pytest.raises(ModelError, match=r"extras\.calibration"):
        validate_card(dict(card, extras={"calibration": dict(same, scale=[[0.1], [0.2]])}))
    with pytest.raises(ModelError, match=r"slice_calibrations\[0\]\.calibration"):
        validate_card(dict(card, extras={"slice_calibrations": [
            {"slice_mm": 6.0, "calibration": dict(same, median=[0.0, 0.0]), "threshold": 1.0,
             "case_score": {"statistic": "fraction_above_threshold"}}]}))


def test_calibrate_with_gradient_bins_writes_tables_and_keeps_normal_brains_nearly_unflagged(make_model):
    """calibrate() on a card asking for gradient bins (extras.calibration_gradient_bins 3): the calibration holds
    grad_edges and intensity x gradient tables, and the engine with that card flags at most 0.1 % of the normal
    validation brain it was calibrated on."""
    from MedGANLogic.normalization import brain_mask
    from MedGANLogic.train.anomaly_calibration import NORMAL_FLAGGED, calibrate, phantom_subject

    card = anomaly_card("tiny-gradient-calibrate")
    card["extras"] = {"smoothing_mm": 4.0, "edge_mm": 4.0, "calibration_gradient_bins": 3}
    folder = make_model(card).folder
    extras = calibrate(folder, "T1w", normal_seeds=[1004], lesion_seeds=[1000], spacing_mm=4.0)
    cal = extras["calibration"]
    assert len(cal["grad_edges"]) == 4 and np.asarray(cal["scale"]).shape == (len(cal["edges"]) - 1, 3)
    assert cal["spread"] > 0
    normal, _ = phantom_subject(1004, "T1w", True, 4.0)
    result = run("anomaly", normal, model=str(folder), device="cpu", precision="fp32")
    brain = brain_mask(normal.array, normal.spacing)
    assert (result.outputs["anomaly_map"].array[brain] > extras["threshold"]).mean() <= NORMAL_FLAGGED + 1e-9
