"""Photographs that ship inside scikit-image (``skimage.data``) as extra super-resolution and MR denoising training
images.

A network trained only on phantom heads learns the phantom's detail: smooth tissue classes with sharp boundaries
between them (the anatomy is a deformed average of 152 brains). Real scans hold finer and more varied structure
(vessels, sulci, texture), and on real MR a model so trained gains far less over B-spline than on the phantoms.
Generic image statistics (edges at every scale and orientation, texture, fine lines) are what photographs hold in
plenty (recipe mr-sr-x2-inplane measures what they changed on real MR). ``data.natural_images``
(a fraction) replaces that share of the training crops with crops of these photographs, degraded exactly as the
heads are (:func:`MedGANLogic.simulate.superres_pair`) and normalised with the card's spec: each photograph one
slice along the model's slice axis (axial for in-plane models; for through-plane ones its rows are z).

Each image is converted to grey and area-averaged 2 x 2 (which removes most of the JPEG blocking and sensor noise of
the photographs: artefacts a model should not learn to draw), and enters in four orientations (as it is, transposed,
upside down, both): the crops' own left-right flip makes all eight. No download: the files are inside the scikit-image
wheel (BSD-3-Clause; each image's docstring in ``skimage.data`` gives its source and licence).

MR denoising (``data.natural_noisy_copies``, :func:`noisy_natural_pairs`): each photograph, in each orientation, as
that many (noisy, clean) pairs with Rician noise at signal-to-noise ratios drawn as the domain randomiser draws them
(``ranges.snr``, log-uniform), beside the heads' slices.
"""

from __future__ import annotations

import numpy as np

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
        image = image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
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
    rng = np.random.default_rng(NOISY_COPIES_SEED)
    sources, targets, names = [], [], []
    for i, image in enumerate(natural_images()):
        clean = (image * scale).astype(np.float32)
        signal = float(np.mean(clean[clean > 0.1 * clean.max()]))
        for k in range(int(copies)):
            sigma = signal / float(np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]))))
            real = clean + rng.normal(0, sigma, clean.shape)
            noisy = np.sqrt(real ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
            sources.append(noisy.astype(np.float32)[None])
            targets.append(clean[None])
            names.append(f"photo{i}-{k}")
    return sources, targets, names
