"""Helpers for the tests of the 3D Slicer side, on the real MRML library (the ``slicer-core`` wheel).

* :func:`make_scene`: a ``vtkMRMLScene`` set up as the Slicer application sets it up for MedGAN's purposes:
  colour tables, a subject hierarchy, a layout node and the Red/Yellow/Green slice views (slice logics).
* :func:`add_volume_node`: a scalar volume node from a :class:`Volume` (oblique IJK->RAS, anisotropic spacing),
  placed in a patient/study of the subject hierarchy, as the DICOM or Add Data modules would.
* :func:`sample_volume`: a volume of the bundled sample subject (Resources/SampleData), thinned to every other
  slice (anisotropic spacing) and turned onto an oblique grid, as a scanner's tilted acquisition would be.
* :func:`lesion_phantom`: a small MR T2w-like head with one bright focal lesion and its ground-truth mask, the
  anatomy smooth enough for the analytic anomaly model below.
* :func:`local_mean_anomaly_state`: weights that make the ``conv2d`` architecture an analytically defined
  "healthy anatomy" model (reconstruction = local mean), see its docstring.
* :func:`render_slice`: the blended background/foreground image of a slice view, via ``vtkMRMLSliceLogic``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from MedGANLogic import slicer_bridge
from MedGANLogic.volume import Volume

VIEWS = ("Red", "Yellow", "Green")
ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


@dataclass
class SceneSetup:
    scene: object
    app_logic: object
    slice_logics: dict

    def close(self) -> None:
        """Detach the logics from the scene before Python frees them: freeing a slice logic that still observes
        a scene whose views were resized crashes VTK's teardown (the application detaches them the same way)."""
        for logic in self.slice_logics.values():
            logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.slice_logics.clear()


def make_scene(views: bool = True) -> SceneSetup:
    """A real MRML scene with colour nodes, a subject hierarchy and (optionally) three slice views + layout."""
    import slicer

    scene = slicer.vtkMRMLScene()
    # The application registers the Colors module's node classes and the Segmentations module's conversion to
    # 3D surfaces ("Show 3D"); the bare library does not.
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    _register_surface_conversion()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    if views:
        layout = slicer.vtkMRMLLayoutNode()
        scene.AddNode(layout)
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
        for name in VIEWS:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
            slice_node = logic.AddSliceNode(name)
            slice_node.SetOrientation(ORIENTATIONS[name])
            slice_node.SetDimensions(256, 256, 1)
            logics[name] = logic
    setup = SceneSetup(scene, app_logic, logics)
    setup._keep = color_logic  # the colour logic must outlive the test
    return setup


def _register_surface_conversion() -> None:
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not any(isinstance(rule, slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule)
               for rule in factory.GetConverterRules()):
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())


def save_and_reload(setup: SceneSetup, folder) -> SceneSetup:
    """Save ``setup``'s scene as 3D Slicer saves one (every volume and MedGAN colour table written beside a .mrml
    file), then load that file into a fresh scene with slice views: a user's "Save" and, later, "Load scene"."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = setup.scene
    scene.SetRootDirectory(str(folder))
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        saved = node.IsA("vtkMRMLVolumeNode") or (node.IsA("vtkMRMLColorTableNode")
                                                   and node.GetAttribute("Category") == "MedGAN")
        if saved and node.AddDefaultStorageNode():
            storage = node.GetStorageNode()
            storage.SetFileName(str(folder / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
            if not storage.WriteData(node):
                raise OSError(f"could not write {node.GetName()} to {storage.GetFileName()}")
    scene.SetURL(str(folder / "scene.mrml"))
    if not scene.Commit():
        raise OSError(f"could not save the scene to {folder}")
    reloaded = make_scene()
    reloaded.scene.SetURL(str(folder / "scene.mrml"))
    if not reloaded.scene.Connect():
        reloaded.close()
        raise OSError(f"could not load {folder / 'scene.mrml'}")
    return reloaded


def add_volume_node(scene, volume: Volume, name: str, study: str | None = "Study 1", modality: str | None = None,
                    contrast: str | None = None):
    """A vtkMRMLScalarVolumeNode holding ``volume`` (copied), with display node and subject-hierarchy item."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer_bridge.numpy_to_matrix(volume.ijk_to_ras()))
    node.SetAndObserveImageData(slicer_bridge.image_data_from_array(volume.array))
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOn()
    modality = modality or volume.metadata.get("modality")
    contrast = contrast or volume.metadata.get("contrast")
    if modality:
        node.SetAttribute("MedGAN.modality", modality)
    if contrast:
        node.SetAttribute("MedGAN.contrast", contrast)
    if study:
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        study_item = _find_or_create_study(sh, study)
        sh.CreateItem(study_item, node)
    return node


def _find_or_create_study(sh, name: str) -> int:
    from vtkmodules.vtkCommonCore import vtkIdList

    children = vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), children, True)
    for i in range(children.GetNumberOfIds()):
        item = children.GetId(i)
        if sh.GetItemName(item) == name:
            return item
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Phantom patient")
    return sh.CreateStudyItem(patient, name)


def sample_volume(name: str, z_step: int = 2, oblique: bool = True) -> Volume:
    """Sample-data volume ``name`` (a manifest entry: T1w, T2w, FLAIR, lesion_mask, CT, CT_lowdose_25, T2w_thick,
    T2w_lowres_inplane) with every ``z_step``-th slice (spacing along z multiplied accordingly) on an oblique
    grid. Metadata (modality, contrast, units) comes from the manifest."""
    from pathlib import Path

    from MedGANLogic.demo import load_manifest
    from MedGANLogic.io import read_volume

    folder = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
    entries = {entry["name"]: entry for entry in load_manifest(folder)}
    if name not in entries:
        raise FileNotFoundError(f"sample volume {name!r} is not in {folder}/manifest.json; run `make simulate`")
    entry = entries[name]
    meta = {k: entry[k] for k in ("modality", "contrast", "units") if entry.get(k) and entry[k] != "mask"}
    volume = read_volume(entry["path"], metadata=meta)
    spacing = (volume.spacing[0], volume.spacing[1], volume.spacing[2] * z_step)
    direction = oblique_direction() @ volume.direction if oblique else volume.direction
    return Volume(volume.array[::z_step], spacing=spacing, origin=volume.origin, direction=direction,
                  metadata=meta)


def node_matrix(node) -> np.ndarray:
    return slicer_bridge.local_ijk_to_ras(node)


def oblique_direction(angles=(12.0, -7.0, 25.0)) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def lesion_phantom(shape=(14, 64, 56), spacing=(1.6, 1.5, 3.0), seed: int = 0, lesion_centre=(7, 26, 34),
                   lesion_sigma_mm: float = 4.0, lesion_gain: float = 800.0,
                   edge: float = 0.12) -> tuple[Volume, np.ndarray]:
    """A T2w-like head (smooth ellipsoid, soft edge, gentle texture) with one bright focal lesion.

    Returns (volume, lesion mask) on an oblique grid with anisotropic ``spacing`` (x, y, z mm); the mask is
    where the lesion adds more than a quarter of its peak intensity.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float64)
    sx, sy, sz = spacing
    cz, cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2
    # distance in "head radii" with a soft (several-voxel) edge: smooth anatomy a local mean reproduces
    r = np.sqrt(((x - cx) * sx / 30.0) ** 2 + ((y - cy) * sy / 36.0) ** 2 + ((z - cz) * sz / 26.0) ** 2)
    head = 1.0 / (1.0 + np.exp((r - 0.85) / edge))
    tissue = 500.0 + 60.0 * np.sin(x * sx / 14.0) + 40.0 * np.cos(y * sy / 17.0)
    lz, ly, lx = lesion_centre
    d2 = ((x - lx) * sx) ** 2 + ((y - ly) * sy) ** 2 + ((z - lz) * sz) ** 2
    lesion = np.exp(-d2 / (2 * lesion_sigma_mm ** 2))
    array = head * tissue + lesion_gain * lesion * head + rng.normal(0.0, 4.0, shape)
    volume = Volume(np.abs(array).astype(np.float32), spacing=spacing, origin=(-31.5, 12.25, -18.0),
                    direction=oblique_direction(), metadata={"modality": "MR", "contrast": "T2w"})
    return volume, lesion > 0.25


def local_mean_anomaly_state(depth: int = 6) -> dict[str, torch.Tensor]:
    """Weights for ``conv2d(in=1, out=1, features=2, depth=depth, residual=False)``: reconstruction = local mean.

    An honest, analytically defined stand-in for a trained f-AnoGAN: "healthy anatomy is smooth", so its
    reconstruction of a slice is that slice averaged by ``depth`` 3x3 box filters (a 2*depth+1 wide, nearly
    Gaussian kernel). Smooth anatomy and linear ramps are reproduced, a small bright lesion is not, so the
    residual |x - recon| is high on the lesion. The LeakyReLU between layers is kept linear by carrying each
    signal as a (+s, -s) channel pair: leaky(s) - leaky(-s) = 1.2 s for either sign of s.
    """
    box = torch.full((3, 3), 1.0 / 9.0)
    state = {}
    for layer in range(depth):
        index = 2 * layer  # Conv, LeakyReLU, Conv, ... in nn.Sequential
        in_ch = 1 if layer == 0 else 2
        out_ch = 1 if layer == depth - 1 else 2
        weight = torch.zeros(out_ch, in_ch, 3, 3)
        if layer == 0:
            signal = [box]  # from the single input channel
        else:
            signal = [box / 1.2, -box / 1.2]  # (leaky(+s) - leaky(-s)) / 1.2 = s, then box it
        for o in range(out_ch):
            sign = 1.0 if o == 0 else -1.0
            for i, k in enumerate(signal):
                weight[o, i] = sign * k
        state[f"body.{index}.weight"] = weight
        state[f"body.{index}.bias"] = torch.zeros(out_ch)
    return state


def anomaly_card(model_id: str = "test-local-mean-anomaly", threshold: float = 0.095, depth: int = 6) -> dict:
    from conftest import tiny_card

    return tiny_card(model_id, task="anomaly", tile_size=None,
                     architecture={"name": "conv2d", "params": {"in_channels": 1, "out_channels": 1, "features": 2,
                                                                "depth": depth, "residual": False}},
                     input={"modality": "MR", "contrast": "T2w",
                            "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                              "range": [-1, 1]}},
                     output={"modality": "anomaly"}, extras={"threshold": threshold, "smoothing_mm": 1.5},
                     name="local-mean reconstruction (analytic test model)")


def render_slice(setup: SceneSetup, view: str, background, foreground=None, opacity: float = 0.5,
                 ras_point=None, zoom: float = 1.0) -> np.ndarray:
    """RGB (H, W, 3) uint8 of a slice view: ``background`` blended with ``foreground`` as vtkMRMLSliceLogic does.

    The view is fitted to the background, magnified by ``zoom`` and moved to ``ras_point`` (through-plane) when
    given.
    """
    from vtkmodules.util import numpy_support

    logic = setup.slice_logics[view]
    composite = logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)
    logic.FitSliceToBackground()
    slice_node = logic.GetSliceNode()
    if zoom != 1.0:
        fov = slice_node.GetFieldOfView()
        slice_node.SetFieldOfView(fov[0] / zoom, fov[1] / zoom, fov[2])
    if ras_point is not None:
        slice_node.JumpSliceByOffsetting(*[float(v) for v in ras_point])
    logic.UpdateImageData()
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    w, h, _ = image.GetDimensions()
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)
    return np.ascontiguousarray(rgba[::-1, :, :3])  # VTK rows run bottom-up
