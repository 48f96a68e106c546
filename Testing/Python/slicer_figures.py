"""Pictures of the 3D Slicer side, made without the Slicer application; the tests check them and the README
shows them.

    python Testing/Python/slicer_figures.py overlay Testing/Reports/anomaly_overlay.png
    python Testing/Python/slicer_figures.py panel Resources/Screenshots/panel.png
    python Testing/Python/slicer_figures.py icon Resources/Icons/MedGAN.png

* ``overlay``: the anomaly map shown as Slicer shows it: ``slicer_bridge.run_on_node`` on a real MRML scene, then
  the Red slice view's blended background (the scan) and foreground (the map, perceptual colour table, opacity,
  lower threshold) rendered by ``vtkMRMLSliceLogic``, with the ground-truth lesion outline and a colour legend.
  The committed figure uses the shipped anomaly model (``brain-anomaly-t2``) on the bundled sample subject's T2w (a
  held-out phantom subject, on an oblique grid) with its ground-truth lesion mask; the tests also render the
  analytic local-mean model of :mod:`slicer_testing` (reconstruction = local mean) on its one-lesion phantom.
* ``panel``: ``Resources/UI/MedGAN.ui`` rendered offscreen with PySide6. Slicer's CTK/qMRML widgets are not
  available outside the application, so for this picture only each is registered as a plain Qt stand-in of
  the same look (a combo box for node selectors, a group box for collapsible sections, a slider for sliders).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "MedGANExtension"))  # the module's own library, MedGANLib, as in Slicer


# --- anomaly overlay --------------------------------------------------------------------------------------------------
@dataclass
class OverlayRender:
    """Screen images of one slice view (H, W, ...) and what the test compares."""

    background: np.ndarray  # RGB of the scan alone
    blended: np.ndarray  # RGB of the scan with the anomaly map as foreground
    truth: np.ndarray  # bool: ground-truth lesion pixels, resliced exactly like the scan
    mm_per_pixel: float
    threshold: float
    upper: float
    case_score: float
    colors: np.ndarray  # (N, 3) float RGB of the colour table used


def install_analytic_anomaly_model(models_dir: Path) -> str:
    """Write the analytic local-mean anomaly model into ``models_dir``; returns its id."""
    import torch
    from slicer_testing import anomaly_card, local_mean_anomaly_state

    from MedGANLogic.models.registry import save_model

    card = anomaly_card()
    save_model(Path(models_dir) / card["id"], card, local_mean_anomaly_state(), dtype=torch.float32)
    return card["id"]


def sample_lesion_case():
    """(T2w Volume, bool lesion mask) of the bundled sample subject, on an oblique grid (every slice kept)."""
    from slicer_testing import sample_volume

    return sample_volume("T2w", z_step=1), sample_volume("lesion_mask", z_step=1).array > 0


def render_overlay(model: str | None = None, opacity: float = 0.6, size: int = 320, case=None) -> OverlayRender:
    """Run the anomaly task through slicer_bridge on ``case`` ((Volume, bool lesion mask); default: the one-lesion
    phantom of :mod:`slicer_testing`) and render the Red view through the lesion's largest cross-section."""
    from slicer_testing import make_scene

    setup = make_scene()
    try:
        return _render_overlay(setup, model, opacity, size, case)
    finally:
        setup.close()


def _render_overlay(setup, model: str | None, opacity: float, size: int, case) -> OverlayRender:
    from slicer_testing import add_volume_node, lesion_phantom, render_slice

    from MedGANLogic import slicer_bridge

    for logic in setup.slice_logics.values():
        logic.GetSliceNode().SetDimensions(size, size, 1)
    volume, lesion = case if case is not None else lesion_phantom()
    scan = add_volume_node(setup.scene, volume, "T2w phantom")
    amap = slicer_bridge.run_on_node(setup.scene, scan, "anomaly", model=model, opacity=opacity)[0]
    truth_node = add_volume_node(setup.scene, volume.with_array(lesion.astype(np.float32)), "lesion truth",
                                 study=None, modality="mask")
    truth_display = truth_node.GetDisplayNode()
    truth_display.AutoWindowLevelOff()
    truth_display.SetWindowLevelMinMax(0.0, 1.0)
    truth_display.SetInterpolate(0)
    scan_display = scan.GetDisplayNode()
    scan_display.SetInterpolate(1)
    k = int(np.argmax(lesion.sum(axis=(1, 2))))  # the axial slice cutting most lesion voxels
    centre = np.array([*np.argwhere(lesion[k]).mean(axis=0)[::-1], k])  # (i, j, k)
    ras = (volume.ijk_to_ras() @ [*centre, 1.0])[:3]
    background = render_slice(setup, "Red", scan, None, 0.0, ras, zoom=1.4)
    blended = render_slice(setup, "Red", scan, amap, opacity, ras, zoom=1.4)
    truth = render_slice(setup, "Red", truth_node, None, 0.0, ras, zoom=1.4)[..., 0] > 127
    slice_node = setup.slice_logics["Red"].GetSliceNode()
    mm_per_pixel = float(slice_node.GetFieldOfView()[0]) / float(slice_node.GetDimensions()[0])
    display = amap.GetDisplayNode()
    color_node = display.GetColorNode()
    colors = []
    for i in range(color_node.GetNumberOfColors()):
        rgba = [0.0, 0.0, 0.0, 0.0]
        color_node.GetColor(i, rgba)
        colors.append(rgba[:3])
    return OverlayRender(background=background, blended=blended, truth=truth, mm_per_pixel=mm_per_pixel,
                         threshold=float(display.GetLowerThreshold()), upper=float(display.GetWindowLevelMax()),
                         case_score=float(amap.GetAttribute("MedGAN.case_score")), colors=np.array(colors))


def colored_pixels(rgb: np.ndarray, min_chroma: int = 30) -> np.ndarray:
    """Pixels whose colour is not a grey level: where the colour-mapped foreground shows through."""
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) >= min_chroma


def overlay_figure(render: OverlayRender, path: Path, what: str = "Analytic local-mean test model on a lesion "
                   "phantom.") -> Path:
    """Compose "scan | scan + anomaly map | + ground-truth outline" with a colour legend into a PNG."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w, _ = render.blended.shape
    outline = render.truth & ~ndimage.binary_erosion(render.truth, iterations=2)
    with_truth = render.blended.copy()
    with_truth[outline] = (0, 255, 255)
    legend_w, title_h, pad = 130, 28, 8
    canvas = Image.new("RGB", (3 * w + 4 * pad + legend_w, h + title_h + pad + 40), (24, 24, 24))
    font = _font(15)
    small = _font(12)
    draw = ImageDraw.Draw(canvas)
    titles = ("T2w scan (Red slice view)", "MedGAN anomaly map (Inferno)", "+ ground-truth lesion (cyan)")
    for n, (image, title) in enumerate(zip((render.background, render.blended, with_truth), titles)):
        x = pad + n * (w + pad)
        canvas.paste(Image.fromarray(image), (x, title_h))
        draw.text((x + 2, 6), title, fill=(235, 235, 235), font=font)
    # colour legend: the display's window [0, upper] through the colour table; values below threshold hidden
    x0, y0, bar_w, bar_h = 3 * (w + pad) + pad + 8, title_h + 10, 22, h - 40
    n_colors = len(render.colors)
    for y in range(bar_h):
        value = render.upper * (1.0 - y / (bar_h - 1))
        index = int(round(value / render.upper * (n_colors - 1)))
        rgb = tuple(int(round(c * 255)) for c in render.colors[index])
        if value < render.threshold:
            rgb = tuple(int(c * 0.25 + 40) for c in rgb)
        draw.line([(x0, y0 + y), (x0 + bar_w, y0 + y)], fill=rgb)
    draw.rectangle([x0, y0, x0 + bar_w, y0 + bar_h], outline=(200, 200, 200))
    for value in (0.0, render.threshold, render.upper):
        y = y0 + int(round((1.0 - value / render.upper) * (bar_h - 1)))
        draw.line([(x0 + bar_w, y), (x0 + bar_w + 5, y)], fill=(220, 220, 220))
        label = f"{value:.3f} threshold" if value == render.threshold else f"{value:.2f}"
        draw.text((x0 + bar_w + 8, y - 7), label, fill=(220, 220, 220), font=small)
    draw.text((x0 - 4, title_h - 12), "residual", fill=(220, 220, 220), font=small)
    footer = (f"vtkMRMLSliceLogic render of slicer_bridge.run_on_node(scene, scan, 'anomaly'): opacity 0.6, shown "
              f"above threshold {render.threshold:.3f}; case score {render.case_score:.3f}.")
    draw.text((pad, h + title_h + 8), footer, fill=(180, 180, 180), font=small)
    footer = what
    draw.text((pad, h + title_h + 22), footer, fill=(180, 180, 180), font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


SHIPPED_ANOMALY_MODEL = "brain-anomaly-t2"


def make_overlay_png(path: Path) -> OverlayRender:
    """The committed figure: the shipped anomaly model on the sample subject's T2w, written to ``path``."""
    from MedGANLogic.models import registry

    registry.clear_cache()
    card = registry.get_model(SHIPPED_ANOMALY_MODEL)
    render = render_overlay(card.id, case=sample_lesion_case())
    overlay_figure(render, path, what=f"{card.id} {card.version} (restoration GAN, demo weights trained on "
                                      f"simulated heads) on the bundled sample subject's T2w (held-out test "
                                      f"phantom, oblique grid); cyan: its ground-truth lesions.")
    return render


def make_analytic_overlay_png(path: Path) -> OverlayRender:
    """Install the analytic model in a temporary folder, render, and write the figure to ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        old = {k: os.environ.get(k) for k in ("MEDGAN_MODELS_DIR", "MEDGAN_BUILTIN_MODELS")}
        os.environ["MEDGAN_MODELS_DIR"] = str(Path(tmp) / "models")
        os.environ["MEDGAN_BUILTIN_MODELS"] = str(Path(tmp) / "none")
        try:
            model = install_analytic_anomaly_model(Path(tmp) / "models")
            render = render_overlay(model)
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    overlay_figure(render, path)
    return render


# --- panel screenshot -------------------------------------------------------------------------------------------------
UI_FILE = REPO / "Resources" / "UI" / "MedGAN.ui"


def _stand_in_classes():
    """Plain Qt classes standing in for Slicer's CTK/qMRML widgets in this picture (same name, similar look)."""
    from PySide6.QtCore import Property
    from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QPushButton, QSlider, QWidget

    class qMRMLWidget(QWidget):  # noqa: N801  (the class name the .ui file names)
        pass

    class ctkCollapsibleButton(QGroupBox):  # noqa: N801
        def _text(self):
            return self.title()

        def _setText(self, value):
            self.setTitle(("\u25b8 " if getattr(self, "_collapsed", False) else "\u25be ") + value)

        def _isCollapsed(self):
            return getattr(self, "_collapsed", False)

        def _setCollapsed(self, value):
            self._collapsed = bool(value)

        text = Property(str, _text, _setText)
        collapsed = Property(bool, _isCollapsed, _setCollapsed)

    class ctkSliderWidget(QWidget):  # noqa: N801
        def __init__(self, parent=None):
            super().__init__(parent)
            layout = QHBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            self.slider = QSlider()
            self.slider.setOrientation(self.slider.orientation().Horizontal)
            self.slider.setRange(0, 1000)
            self.spin = QDoubleSpinBox()
            self.spin.setRange(0.0, 1.0)
            layout.addWidget(self.slider, 1)
            layout.addWidget(self.spin)

        def _sync(self):
            span = self.spin.maximum() - self.spin.minimum() or 1.0
            self.slider.setValue(int(round(1000 * (self.spin.value() - self.spin.minimum()) / span)))

        def _get(name):
            return lambda self: getattr(self.spin, name)()

        def _set(name):
            def setter(self, value):
                getattr(self.spin, "set" + name[0].upper() + name[1:])(value)
                self._sync()
            return setter

        value = Property(float, _get("value"), _set("value"))
        minimum = Property(float, _get("minimum"), _set("minimum"))
        maximum = Property(float, _get("maximum"), _set("maximum"))
        singleStep = Property(float, _get("singleStep"), _set("singleStep"))
        decimals = Property(int, _get("decimals"), _set("decimals"))

    class qMRMLNodeComboBox(QComboBox):  # noqa: N801
        def _noneDisplay(self):
            return getattr(self, "_none", "None")

        def _setNoneDisplay(self, value):
            self._none = value

        noneDisplay = Property(str, _noneDisplay, _setNoneDisplay)

    class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):  # noqa: N801
        pass

    class qMRMLSegmentationShow3DButton(QPushButton):  # noqa: N801
        def __init__(self, parent=None):
            super().__init__("Show 3D", parent)

    return [qMRMLWidget, ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox,
            qMRMLSegmentationShow3DButton]


def load_panel():
    """(QApplication, the panel widget loaded from the .ui with stand-ins) — offscreen, for pictures and checks."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QFile, qInstallMessageHandler
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])

    def quiet(mode, context, message):  # the stand-ins have no MRML scene signals to connect: expected
        if "vtkMRMLScene" not in message and "QObject::connect" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(quiet)
    loader = QUiLoader()
    for cls in _stand_in_classes():
        loader.registerCustomWidget(cls)
    ui_file = QFile(str(UI_FILE))
    if not ui_file.open(QFile.ReadOnly):
        raise OSError(f"cannot open {UI_FILE}")
    try:
        panel = loader.load(ui_file)
    finally:
        ui_file.close()
    if panel is None:
        raise RuntimeError(f"Qt could not load {UI_FILE}: {loader.errorString()}")
    app._medgan_loader = loader  # keep the stand-in classes alive as long as the panel
    return app, panel


def _example_card():
    """The card the panel shows: the built-in anomaly model, or the analytic test model if none is installed."""
    from slicer_testing import anomaly_card

    from MedGANLogic.models import registry
    from MedGANLogic.models.card import ModelCard

    cards = registry.list_models("anomaly")
    if cards:
        return cards[0]
    data = anomaly_card()
    data["weights"]["sha256"] = "0" * 64
    return ModelCard(data, folder=Path("Testing/Python/slicer_testing.py"), source="test")


def render_panel(path: Path, width: int = 440) -> Path:
    """Render MedGAN.ui as it looks during an anomaly run (Apply turned Cancel, progress, status) to a PNG."""
    from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QProgressBar, QPushButton, QTextBrowser, QWidget
    from slicer_testing import sample_volume

    app, panel = load_panel()
    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731
    # what the panel shows for the bundled sample T2w (the text MedGANLogic.describeInput makes)
    t2 = sample_volume("T2w", z_step=1, oblique=False)
    info = (f"MR T2w; {t2.shape[::-1]} voxels of {' x '.join(f'{v:.2f}' for v in t2.spacing)} mm; field of view "
            f"{' x '.join(f'{v:.0f}' for v in t2.physical_extent())} mm")
    find(QComboBox, "inputVolumeSelector").addItem("MedGAN T2w")
    find(QLabel, "inputInfoLabel").setText(info)
    find(QComboBox, "batchVolumesSelector").addItem("MedGAN T2w")
    task = find(QComboBox, "taskComboBox")
    task.setCurrentIndex(3)  # Anomaly map
    from MedGANLib import panel_text

    card = _example_card()
    find(QComboBox, "modelComboBox").addItem(f"{card.name} ({card.id})")  # as the module labels models
    find(QTextBrowser, "modelCardBrowser").setHtml(panel_text.card_summary_html(card))
    find(QComboBox, "deviceComboBox").addItem("Auto (GPU if available)")
    output = find(QComboBox, "outputNodeSelector")
    output.addItem(output.property("noneDisplay") or "Create new node")
    apply_button = find(QPushButton, "applyButton")
    apply_button.setText("Cancel")
    apply_button.setEnabled(True)
    progress = find(QProgressBar, "progressBar")
    progress.setValue(62)
    done, slices = round(0.62 * t2.shape[0]), t2.shape[0]
    find(QLabel, "statusLabel").setText(f"anomaly of MedGAN T2w with {card.id}: {done}/{slices} slices")
    # as the module's widget does: the card's threshold is shown, and the slider follows the "from the card" box
    find(QWidget, "thresholdSliderWidget").setProperty("value", float(card.extras.get("threshold", 0.095)))
    find(QWidget, "thresholdSliderWidget").setEnabled(not find(QCheckBox, "cardThresholdCheckBox").isChecked())
    for box in panel.findChildren(QWidget):
        if type(box).__name__ == "ctkCollapsibleButton" and box.property("collapsed"):
            box.setProperty("text", box.title()[2:])  # redraw the arrow as collapsed
            for child in box.findChildren(QWidget):
                child.setVisible(False)
            box.setFixedHeight(28)
    panel.resize(width, 10)
    panel.adjustSize()
    panel.resize(width, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    panel.close()
    return path


# --- module icon ------------------------------------------------------------------------------------------------------
def make_icon(path: Path, size: int = 128) -> Path:
    """The module/extension icon: a head slice, grey on the left (the scan), Inferno on the right (what MedGAN
    makes of it), on a dark tile with the name."""
    from PIL import Image, ImageDraw

    from MedGANLogic.slicer_bridge import COLORMAP_ANCHORS

    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size / 2, size * 0.40
    r = np.sqrt(((x - cx) / (size * 0.31)) ** 2 + ((y - cy) / (size * 0.36)) ** 2)
    head = 1.0 / (1.0 + np.exp((r - 0.92) / 0.02))
    tissue = 0.55 + 0.25 * np.cos(r * 9.0) * np.exp(-r * 1.5) + 0.12 * np.sin(x / 5.0) * np.sin(y / 7.0)
    value = np.clip(head * tissue, 0, 1)
    anchors = np.array(COLORMAP_ANCHORS["Inferno"])
    positions = np.linspace(0, 1, len(anchors))
    inferno = np.stack([np.interp(value, positions, anchors[:, c]) for c in range(3)], axis=-1)
    grey = np.repeat(value[..., None], 3, axis=-1)
    rgb = np.where((x < cx)[..., None], grey, inferno)
    tile = np.array([0.13, 0.15, 0.20])
    rgb = rgb * head[..., None] + tile * (1 - head[..., None])
    image = Image.fromarray((rgb * 255).round().astype(np.uint8)).convert("RGBA")
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, size - 1, size - 1], radius=size // 8, fill=255)
    image.putalpha(mask)
    draw = ImageDraw.Draw(image)
    draw.line([(cx, cy - size * 0.36), (cx, cy + size * 0.36)], fill=(255, 255, 255, 200), width=max(1, size // 64))
    font = _font(size // 6)
    text = "MedGAN"
    width = draw.textlength(text, font=font)
    draw.text(((size - width) / 2, size * 0.87 - size // 12), text, fill=(245, 245, 245, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("overlay", "panel", "icon"):
        print(__doc__)
        return 2
    what, path = argv
    if what == "overlay":
        make_overlay_png(Path(path))
    elif what == "icon":
        make_icon(Path(path))
    else:
        render_panel(Path(path))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
