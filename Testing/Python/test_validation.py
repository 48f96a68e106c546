"""The validation no report scores (MedGANLogic.evaluation.validation): its cases, its scores, its real slice."""

import numpy as np
import pytest

from MedGANLogic.evaluation import real_data, validation


def _slice():
    yy, xx = np.mgrid[:32, :32]
    body = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 14 ** 2
    return np.where(body, 40.0 + 30.0 * np.sin(xx / 3.0), -1000.0).astype(np.float32)


def test_ldct_cases_are_seeded_and_scored_against_their_references():
    """Ten settings (two pixel sizes x three projection-domain doses/kernels and two smoothed noises), the same
    bytes again; a denoiser that returns each reference beats the noisy input everywhere, and the means split
    projection-domain from smoothed-noise cases."""
    cases = validation.ldct_cases(_slice(), 0.7)
    again = validation.ldct_cases(_slice(), 0.7)
    assert len(cases) == 10 and len({c.name for c in cases}) == 10
    assert [c.pixel_mm for c in cases] == [0.7] * 5 + [1.4] * 5 and sum(c.smoothed for c in cases) == 4
    for a, b in zip(cases, again):
        assert np.array_equal(a.inputs, b.inputs) and a.inputs.shape[0] == 4
        assert a.inputs.shape[1:] == a.reference.shape == a.body.shape
    smoothed = next(c for c in cases if c.smoothed)
    assert abs(float((smoothed.inputs - smoothed.reference).std()) - validation.SMOOTHED_NOISE_HU) < 0.5
    by_name = {c.name: c for c in cases}
    noisy = validation.score_ldct(cases, None)

    def oracle(slices, pixel_mm):  # the reference of the case these inputs are
        case = next(c for c in cases if c.pixel_mm == pixel_mm and np.array_equal(c.inputs, slices))
        return np.stack([case.reference] * len(slices))

    perfect = validation.score_ldct(cases, oracle)
    assert all(perfect[n] > noisy[n] for n in by_name)
    assert noisy["smoothed mean"] == np.mean([noisy[c.name] for c in cases if c.smoothed])
    assert noisy["projection mean"] == np.mean([noisy[c.name] for c in cases if not c.smoothed])


def test_validation_images_are_fetched_with_the_real_images_but_kept_out_of_the_reports():
    for name, spec in real_data.VALIDATION_IMAGES.items():
        assert spec.file in real_data.FILES and name not in real_data.IMAGES
        assert real_data.FILES[spec.file].package in real_data.PACKAGES
    assert all(row["image"] not in real_data.VALIDATION_IMAGES for row in real_data.inventory())


def test_anomaly_validation_scores_phantom_pairs_and_post_contrast_heads(monkeypatch):
    """The anomaly validation's wiring: a model whose map is exactly the lesions scores AUROC and Dice 1, flags no
    normal brain and ranks every lesioned phantom above its twin; the post-contrast heads carry enhancing tissue
    and lesions."""
    seen = []

    def perfect(model, volume, lesion):
        seen.append((volume.metadata.get("contrast"), int(lesion.sum())))
        brain = volume.array > np.percentile(volume.array, 50)
        lesion = lesion & brain
        return {"score": float(lesion.sum()), "brain": brain, "lesion": lesion,
                "map": lesion.astype(np.float32), "mask": lesion.copy()}

    monkeypatch.setattr(validation, "anomaly_case", perfect)
    each = {}
    scores = validation.anomaly_scores("any", "T1w", seeds=(1010,), heads=1, per_case=each)
    assert each["phantoms"] == each["heads"] == each["tumours"] == [1.0] and len(each["tumours z-score"]) == 1
    assert scores["phantom voxel AUROC"] == scores["phantom Dice"] == scores["phantom case AUROC"] == 1.0
    assert scores["phantom normal flagged %"] == 0.0 and scores["heads normal flagged %"] == 0.0
    assert scores["heads lesion AUROC"] == 1.0 and scores["tumours lesion AUROC"] == 1.0
    assert scores["tumours normal flagged %"] == 0.0 and 0.0 <= scores["tumours z-score AUROC"] <= 1.0
    assert np.isnan(scores["heads top 1 % on bright tissue %"])  # the map is zero on all normal brain
    assert [c for c, _ in seen] == ["T1w"] * 5 and seen[0][1] > 0 and seen[1][1] == 0 and seen[2][1] > 0
    assert seen[3][1] > 0 and seen[4][1] > 0  # the enhancing-tumour head has its tumour, shaded too
    assert each["shaded tumours"] == [1.0] and scores["shaded tumours normal flagged %"] == 0.0
    assert set(validation.anomaly_scores("any", "T2w", seeds=(1010,))) == {  # the heads are T1w only
        "phantom voxel AUROC", "phantom Dice", "phantom normal flagged %", "phantom case AUROC"}


def test_superres_validation_scores_gains_over_b_spline_with_and_without_a_fit(monkeypatch, make_model):
    """Each case degraded as the model's card says, restored onto the reference grid and scored against B-spline
    (B-spline itself as the model gains nothing); --adapt goes through the fit and changes the scores."""
    from conftest import tiny_inplane_card

    from MedGANLogic.simulate import make_subject

    t2 = make_subject(2001, spacing_mm=4.0, contrasts=("T2w",), snr=30.0, n_lesions=0).volumes["T2w"]
    head = t2.with_array(np.ascontiguousarray(t2.array[20:26]), metadata={"modality": "MR"})
    monkeypatch.setattr(real_data, "load", lambda name, cache=None: head)
    card = make_model(tiny_inplane_card())
    trained = validation.superres_scores(card.id)
    assert list(trained) == [*validation.SR_CASES, "mean"] and np.isfinite(list(trained.values())).all()
    assert trained["mean"] == np.mean([trained[c] for c in validation.SR_CASES])
    fitted = validation.superres_scores(card.id, adapt=True, adapt_steps=2)
    assert fitted["mean"] != trained["mean"]  # the fit changed the network
    # --ensemble reaches the engine (it was once ignored: every pass count scored the card's)
    assert validation.superres_scores(card.id, ensemble=2)["mean"] != validation.superres_scores(card.id,
                                                                                               ensemble=1)["mean"]
    with pytest.raises(SystemExit):  # a fit runs its card's passes: the two options together are refused
        validation.main(["superres", "--adapt", "--ensemble", "8", card.id])
    import MedGANLogic.pipeline as pipeline
    from MedGANLogic.evaluation.baselines import bspline_upsample

    class Exact:  # B-spline as the "model": no gain
        def __init__(self, volume):
            self.volume = volume

    def spline(task, low, model, device, **options):
        from MedGANLogic.simulate.lowres import superres_pair

        grid = superres_pair(head, (1, 2, 2), "kspace_truncate")[1]
        return Exact(grid.with_array(bspline_upsample(low, grid)))

    monkeypatch.setattr(pipeline, "run", spline)
    assert all(abs(v) < 1e-9 for v in validation.superres_scores(card.id).values())


def test_mr_ct_validation_scores_each_direction_against_its_reference(monkeypatch):
    """The card's input modality picks the direction; a model that returns the reference scores 0, one that is
    100 off everywhere scores 100 in every region (the runs are replaced: the plumbing is what is tested)."""
    from MedGANLogic.evaluation.context import EvalContext

    offset = {"value": 0.0}

    def exact(self, model_id, task, array, modality, contrast=None, **options):
        subject = self.subject(1000)
        ref = subject["CT"] if modality == "MR" else self.subject(1000, keys=("T1w", "T2w"), noise_free=True)["T1w"]
        return ref + offset["value"]

    monkeypatch.setattr(EvalContext, "run_model", exact)
    to_ct = validation.mr_ct_scores("mr-to-ct", seeds=(1000,))
    assert set(to_ct) == {"MAE head", "MAE bone", "MAE brain"} and max(to_ct.values()) < 1e-6
    assert set(validation.mr_ct_scores("ct-to-mr", seeds=(1000,))) == {"MAE head"}
    offset["value"] = 100.0
    assert all(abs(v - 100.0) < 1e-3 for v in validation.mr_ct_scores("mr-to-ct", seeds=(1000,)).values())


def test_radial_shading_is_smooth_fixed_per_index_and_keeps_the_geometry():
    """The shaded-tumour set's shading: a positive radial field, the same for the same index, centre and rim apart by
    exp(|a|) with |a| in [0.2, 0.5], on the volume's own grid."""
    from MedGANLogic.volume import Volume

    vol = Volume(np.full((10, 30, 30), 100.0, np.float32), spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
    brain = np.zeros(vol.shape, bool)
    brain[1:9, 3:27, 3:27] = True
    shaded = [validation.radial_shading(vol, brain, i) for i in range(6)]
    assert all(s.same_geometry(vol) for s in shaded)
    assert np.array_equal(shaded[2].array, validation.radial_shading(vol, brain, 2).array)
    ratios = []
    for s in shaded:
        inside = s.array[brain]
        assert (inside > 0).all()
        ratios.append(float(inside.max() / inside.min()))
    assert all(np.exp(0.19) <= r <= np.exp(0.5) + 1e-3 for r in ratios)
    signs = {np.sign(s.array[5, 15, 15] - s.array[5, 4, 4]) for s in shaded}
    assert signs == {-1.0, 1.0}  # bright centres and bright rims among six
