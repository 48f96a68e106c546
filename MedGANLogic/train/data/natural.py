"""Photographs that ship inside scikit-image (``skimage.data``) as extra super-resolution and denoising training
images.

A network trained only on phantom heads learns the phantom's detail: smooth tissue classes with sharp boundaries
between them (the anatomy is a deformed average of 152 brains). Real scans hold finer and more varied structure
(vessels, sulci, texture), and on real MR a model so trained gains far less over B-spline than on the phantoms.
Generic image statistics (edges at every scale and orientation, texture, fine lines) are what photographs hold in
plenty (recipe mr-sr-x2-inplane-photos measures what they changed on real MR). ``data.natural_images``
(a fraction) replaces that share of the training crops with crops of these photographs, degraded exactly as the
heads are (:func:`MedGANLogic.simulate.superres_pair`) and normalised with the card's spec: each photograph one
slice along the model's slice axis (axial for in-plane models; for through-plane ones its rows are z).

Each image is converted to grey and area-averaged 2 x 2 (which removes most of the JPEG blocking and sensor noise of
the photographs: artefacts a model should not learn to draw), and enters in four orientations (as it is, transposed,
upside down, both): the crops' own left-right flip makes all eight. No download: the files are inside the scikit-image
wheel (BSD-3-Clause; each image's docstring in ``skimage.data`` gives its source and licence).

MR denoising (``data.natural_noisy_copies``, :func:`noisy_natural_pairs`): each photograph, in each orientation, as
that many (noisy, clean) pairs with Rician noise at signal-to-noise ratios drawn as the domain randomiser draws them
(``ranges.snr``, log-uniform), beside the heads' slices. CT denoising (the same key, :func:`noisy_natural_ct_pairs`):
each copy a body-sized CT slice made of the photograph (its grey levels mapped onto a random HU span) and scanned at
low and full dose in the projection domain, as the heads are.
"""

from __future__ import annotations

import functools

import numpy as np

from ...resampling import block_mean_2x2

NOISY_COPIES_SEED = 20261206  # the noise of data.natural_noisy_copies (fixed: a recipe's photographs are its own)

# real photographs (no drawings, text or synthetic test patterns); each at least 300 pixels on a side
NATURAL_IMAGES = ("camera", "moon", "coins", "brick", "grass", "gravel", "cell", "astronaut", "coffee", "chelsea",
                  "rocket", "retina", "immunohistochemistry", "hubble_deep_field")


def natural_images(names: tuple[str, ...] = NATURAL_IMAGES) -> list[np.ndarray]:
    """The photographs ``names`` of ``skimage.data`` as grey float32 (H, W) images in [0, 1], area-averaged 2 x 2 (even
    sizes), four orientations each."""
    from skimage import color, data

    out = []
    for name in names:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 3:
            image = color.rgb2gray(image[..., :3])
        image = image.astype(np.float32)
        h, w = (image.shape[0] // 4) * 4, (image.shape[1] // 4) * 4  # 2 x 2 blocks, then an even size
        image = block_mean_2x2(image[:h, :w])
        image /= max(float(image.max()), 1e-6)
        out += [np.ascontiguousarray(v, dtype=np.float32) for v in (image, image.T, image[::-1], image.T[::-1])]
    return out


def noisy_natural_pairs(copies: int, snr: tuple[float, float], scale: float = 1000.0
                        ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """(noisy sources, clean targets, names) for MR denoising: every image of :func:`natural_images` times
    ``scale`` (an MR-like intensity), ``copies`` times, each with Rician (magnitude) noise of sigma = its signal /
    SNR, the SNR log-uniform in ``snr`` and the signal the mean of its pixels above a tenth of its maximum (the
    photograph's "tissue", as the randomiser's SNR is brain signal over sigma). One-slice volumes (1, H, W),
    float32, drawn from :data:`NOISY_COPIES_SEED`: the same bytes for every run."""
    from ...simulate.randomize import log_uniform

    rng = np.random.default_rng(NOISY_COPIES_SEED)
    sources, targets, names = [], [], []
    for i, image in enumerate(natural_images()):
        clean = (image * scale).astype(np.float32)
        signal = float(np.mean(clean[clean > 0.1 * clean.max()]))
        for k in range(int(copies)):
            sigma = signal / log_uniform(rng, snr)
            real = clean + rng.normal(0, sigma, clean.shape)
            noisy = np.sqrt(real ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
            sources.append(noisy.astype(np.float32)[None])
            targets.append(clean[None])
            names.append(f"photo{i}-{k}")
    return sources, targets, names


def _photo_ct_pair(image: np.ndarray, ranges, seed: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(low-dose, full-dose) reconstructions in HU of one photograph made a body-sized CT slice (see
    :func:`noisy_natural_ct_pairs`), drawn from ``seed``."""
    from ...simulate.lowdose import simulate_low_dose
    from ...simulate.randomize import ct_full_dose_photons, draw_ct_kernel, image_domain_low_dose, log_uniform

    rng = np.random.default_rng(seed)
    pixel = float(rng.uniform(*ranges.ct_inplane_mm))
    noise_hu, dose = log_uniform(rng, ranges.ct_noise_hu), float(rng.uniform(*ranges.ct_dose_fraction))
    kernel, cutoff = draw_ct_kernel(rng, ranges)
    # a square crop at most 200-400 mm across (a body's width), the photograph's grey levels mapped linearly onto
    # a random HU span around a random centre (lung-dark to bone-bright; most of it soft tissue), inside an
    # ellipse of air
    side = int(min(*image.shape, round(float(rng.uniform(200.0, 400.0)) / pixel)))
    y0, x0 = (int(rng.integers(0, n - side + 1)) for n in image.shape)
    crop = image[y0:y0 + side, x0:x0 + side]
    centre, span = float(rng.uniform(-200.0, 100.0)), log_uniform(rng, (100.0, 2000.0))
    hu = np.clip(centre + (crop - float(np.mean(crop))) * span, -1000.0, 2000.0)
    r = (np.arange(side) - (side - 1) / 2.0) / (side / 2.0)  # -1 .. 1 across the crop, both axes
    ay, ax = rng.uniform(0.75, 1.0, 2)
    body = (r[:, None] / ay) ** 2 + (r[None, :] / ax) ** 2 <= 1.0
    hu = np.where(body, hu, -1000.0).astype(np.float32)
    low, full = simulate_low_dose(hu, dose, seed=int(rng.integers(2 ** 31)), pixel_mm=pixel,
                                  full_dose_photons=ct_full_dose_photons(noise_hu, pixel, dose, kernel, cutoff),
                                  kernel=kernel, cutoff=cutoff)
    image_low, _ = image_domain_low_dose(full, noise_hu, np.random.default_rng((*seed, 17)), ranges)
    return (low if image_low is None else image_low)[None], full[None]


def noisy_natural_ct_pairs(copies: int, ranges, workers: int | None = None
                           ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """(low-dose, full-dose, names) for CT denoising: every image of :func:`natural_images`, ``copies`` times, each
    copy a CT slice made of the photograph and scanned as the randomiser scans the heads
    (:func:`MedGANLogic.simulate.lowdose.simulate_low_dose`: projection-domain Poisson noise, filtered
    back-projection; the target is the full-dose reconstruction of the same projections).

    Per copy, from ``ranges`` (:class:`~MedGANLogic.simulate.randomize.DomainRanges`): the pixel size
    (``ct_inplane_mm``), the nominal noise (``ct_noise_hu``, photons calibrated as for the heads), the dose fraction
    and the reconstruction kernel; and, of its own: a square crop 200-400 mm across, the grey levels mapped onto a
    span of 100-2000 HU (log-uniform) centred at -200 to 100 HU, clipped to [-1000, 2000], inside an ellipse (axes
    75-100 % of the crop) of air. One-slice volumes (1, H, W), float32, HU. Each copy is seeded by
    (:data:`NOISY_COPIES_SEED`, image, copy): the same bytes however many processes (``workers``, default
    :func:`~MedGANLogic.simulate.randomize.sample_workers`) draw them."""
    from ...simulate.randomize import forked_map, sample_workers

    images = _photographs()  # loaded here, before the workers fork: they inherit it
    jobs = [(i, k) for i in range(len(images)) for k in range(int(copies))]
    workers = sample_workers(len(jobs)) if workers is None else int(workers)
    pairs = list(forked_map(functools.partial(_draw_photo_ct_pair, ranges), jobs, workers, chunksize=8))
    return [p[0] for p in pairs], [p[1] for p in pairs], [f"photo{i}-{k}" for i, k in jobs]


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, ...]:
    return tuple(natural_images())


def _draw_photo_ct_pair(ranges, job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    i, k = job
    return _photo_ct_pair(_photographs()[i], ranges, (NOISY_COPIES_SEED, 1, i, k))
