"""Drawing the demo montage with Pillow: slices at their physical size, overlays, colour bar, captions.

Every panel is a 2D slice (rows top to bottom, as displayed) drawn at :data:`PX_PER_MM`; intensities are
interpolated linearly (as Slicer's slice views do), masks by nearest neighbour, so outlines follow the voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

PX_PER_MM = 2.0  # picture scale: a 2 mm voxel is 4 pixels wide

BACKGROUND = (12, 12, 12)
TEXT, DIM, FIGURE = (240, 240, 240), (170, 170, 170), (140, 200, 255)
TRUTH = (60, 220, 90)
PAD = 12
# matplotlib's "inferno" at 9 evenly spaced points: perceptually uniform, readable in grey, safe for colour-blind
INFERNO = np.array([(0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84), (228, 90, 49),
                    (249, 142, 9), (249, 203, 53), (252, 255, 164)], dtype=np.float32)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, AttributeError):
        return ImageFont.load_default()


def _display_size(image: np.ndarray, pixel: tuple[float, float]) -> tuple[int, int]:
    return (max(1, round(image.shape[1] * pixel[1] * PX_PER_MM)), max(1, round(image.shape[0] * pixel[0] * PX_PER_MM)))


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(size, mode))


def grey(image: np.ndarray, window: tuple[float, float], pixel: tuple[float, float]) -> Image.Image:
    """The slice in ``window`` (low, high) as an RGB picture at its physical size."""
    values = _resize(image, _display_size(image, pixel))
    lo, hi = window
    g = (np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(g).convert("RGB")


def _mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return _resize(mask.astype(np.float32), size, nearest=True) > 0.5


def inferno(fraction: np.ndarray) -> np.ndarray:
    """Colours (..., 3) float for values in 0..1."""
    x = np.clip(fraction, 0, 1) * (len(INFERNO) - 1)
    stops = np.arange(len(INFERNO))
    return np.stack([np.interp(x, stops, INFERNO[:, c]) for c in range(3)], axis=-1)


def heat(base: Image.Image, amap: np.ndarray, levels: tuple[float, float, float], opacity: float = 0.7) -> Image.Image:
    """``amap`` in colour over ``base``: transparent below ``levels[0]``, inferno from there to ``levels[2]``."""
    values = _resize(amap, base.size)
    low, _, high = levels
    colour = inferno((values - low) / max(high - low, 1e-6))
    alpha = np.where(values >= low, opacity, 0.0)[..., None]
    rgb = np.asarray(base, dtype=np.float32) * (1 - alpha) + colour * alpha
    return Image.fromarray(rgb.astype(np.uint8))


def filled(base: Image.Image, mask: np.ndarray, colour=(255, 60, 60), opacity: float = 0.5) -> Image.Image:
    """``mask`` (a slice on the grid of ``base``'s slice) filled with ``colour`` over ``base``."""
    inside = _mask(mask, base.size)[..., None]
    rgb = np.asarray(base, dtype=np.float32)
    rgb = np.where(inside, rgb * (1 - opacity) + np.array(colour, np.float32) * opacity, rgb)
    return Image.fromarray(rgb.astype(np.uint8))


def outlines(base: Image.Image, mask: np.ndarray, truth: np.ndarray | None, colour=(255, 220, 0)) -> Image.Image:
    """Outlines (2 px) of ``mask`` in ``colour`` and of ``truth`` in green over ``base``."""
    rgb = np.array(base)
    for m, c in ((truth, TRUTH), (mask, colour)):
        if m is None:
            continue
        big = _mask(m, base.size)
        rgb[big & ~ndimage.binary_erosion(big, iterations=2)] = c
    return Image.fromarray(rgb)


def colour_bar(levels: tuple[float, float, float], title: str, mark: str, height: int = 300) -> Image.Image:
    """A vertical inferno bar from ``levels[0]`` (bottom) to ``levels[2]`` with ``levels[1]`` marked."""
    low, middle, high = levels
    small, bar_w = font(14), 22
    img = Image.new("RGB", (170, height + 52), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((0, 0), title, fill=TEXT, font=font(15))
    top = 26
    ramp = inferno(np.linspace(1, 0, height))[:, None, :].repeat(bar_w, axis=1)
    img.paste(Image.fromarray(ramp.astype(np.uint8)), (4, top))
    for value, label in ((high, f"{high:.2f}"), (middle, f"{middle:.2f} {mark}"), (low, f"{low:.2f}")):
        y = top + round((high - value) / max(high - low, 1e-6) * (height - 1))
        draw.line([(4, y), (4 + bar_w + 6, y)], fill=TEXT, width=2 if value == middle else 1)
        draw.text((bar_w + 14, y - 8), label, fill=TEXT, font=small)
    if low > 0:
        draw.text((4, top + height + 8), f"transparent below {low:.2f}", fill=DIM, font=small)
    return img


def _wrap(text: str, width: int, f: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=f) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def row(title: str, figure: str, panels: list[tuple[str, Image.Image]], legend: Image.Image | None,
        scale_bar_mm: float = 50) -> Image.Image:
    """Caption (title, measured figure), then the panels side by side with their headings, then the legend."""
    big, medium, small = font(21), font(17), font(15)
    width = sum(p.width + PAD for _, p in panels) + PAD + (legend.width + PAD if legend else 0)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    figure_lines = _wrap(figure, max(width, 1200) - 2 * PAD, medium, probe)
    head = 8 + 28 + 22 * len(figure_lines) + 8
    panel_h = max(p.height for _, p in panels)
    img = Image.new("RGB", (width, head + 22 + max(panel_h, legend.height if legend else 0) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((PAD, 8), title, fill=TEXT, font=big)
    for n, line in enumerate(figure_lines):
        draw.text((PAD, 8 + 28 + 22 * n), line, fill=FIGURE, font=medium)
    x = PAD
    for name, picture in panels:
        draw.text((x, head), name, fill=DIM, font=small)
        img.paste(picture, (x, head + 22))
        x += picture.width + PAD
    if legend:
        img.paste(legend, (x, head + 22))
    first = panels[0][1]
    bar = round(scale_bar_mm * PX_PER_MM)
    y = head + 22 + first.height - 14
    draw.line([(PAD + 10, y), (PAD + 10 + bar, y)], fill=TEXT, width=3)
    draw.text((PAD + 10 + bar + 6, y - 9), f"{scale_bar_mm / 10:g} cm", fill=TEXT, font=small)
    return img


def montage(title: str, rows: list[Image.Image], path: Path, min_width: int = 1200) -> Image.Image:
    """The rows one under the other below ``title``, separated by thin lines; written to ``path`` (PNG)."""
    width = max(min_width, *(r.width for r in rows))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrap(title, width - 2 * PAD, font(19), probe)
    top = PAD + 26 * len(title_lines) + PAD
    canvas = Image.new("RGB", (width, top + sum(r.height + 2 for r in rows)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(title_lines):
        draw.text((PAD, PAD + 26 * n), line, fill=TEXT, font=font(19))
    y = top
    for r in rows:
        draw.line([(0, y), (width, y)], fill=(60, 60, 60), width=2)
        canvas.paste(r, (0, y + 2))
        y += r.height + 2
    canvas.save(path)
    return canvas
