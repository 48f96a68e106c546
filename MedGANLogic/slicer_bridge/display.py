"""How MedGAN's outputs look in Slicer: colour maps, the anomaly overlay (colour, opacity, threshold, legend), CT
window presets, and which volumes the slice views show (side by side, or the map over the scan).

Imports ``slicer`` inside functions only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .nodes import ATTRIBUTE_PREFIX, array_from_node, input_of, node_modality

#: CT window/level presets (name, window, level) in HU, added to every CT output's display node.
CT_WINDOW_PRESETS = (("Soft tissue", 400.0, 40.0), ("Brain", 80.0, 40.0), ("Bone", 2000.0, 400.0),
                     ("Lung", 1500.0, -600.0))
COLORMAPS = ("Inferno", "Viridis", "Magma", "Plasma")

#: Anchors of matplotlib's perceptually uniform colour maps (17 evenly spaced samples, CC0), used only when the
#: scene has no colour node of that name (3D Slicer ships Inferno/Viridis/Magma/Plasma; the MRML wheel does not).
COLORMAP_ANCHORS = {
    "Inferno": [(0.001, 0.0, 0.014), (0.042, 0.028, 0.141), (0.129, 0.047, 0.291), (0.238, 0.037, 0.396),
                (0.342, 0.062, 0.429), (0.441, 0.099, 0.432), (0.541, 0.135, 0.415), (0.64, 0.171, 0.381),
                (0.736, 0.216, 0.33), (0.822, 0.275, 0.266), (0.894, 0.353, 0.194), (0.947, 0.449, 0.115),
                (0.978, 0.558, 0.035), (0.988, 0.675, 0.065), (0.975, 0.798, 0.206), (0.948, 0.917, 0.411),
                (0.988, 0.998, 0.645)],
    "Viridis": [(0.267, 0.005, 0.329), (0.282, 0.095, 0.417), (0.279, 0.175, 0.483), (0.259, 0.252, 0.525),
                (0.23, 0.322, 0.546), (0.199, 0.388, 0.555), (0.173, 0.449, 0.558), (0.149, 0.508, 0.557),
                (0.128, 0.567, 0.551), (0.121, 0.626, 0.533), (0.158, 0.684, 0.502), (0.246, 0.739, 0.452),
                (0.369, 0.789, 0.383), (0.516, 0.831, 0.294), (0.678, 0.864, 0.19), (0.846, 0.887, 0.1),
                (0.993, 0.906, 0.144)],
    "Magma": [(0.001, 0.0, 0.014), (0.04, 0.031, 0.135), (0.113, 0.065, 0.277), (0.212, 0.061, 0.418),
              (0.316, 0.071, 0.485), (0.414, 0.103, 0.506), (0.513, 0.136, 0.507), (0.613, 0.165, 0.496),
              (0.716, 0.215, 0.475), (0.816, 0.264, 0.44), (0.904, 0.318, 0.406), (0.96, 0.408, 0.38),
              (0.987, 0.52, 0.39), (0.996, 0.631, 0.43), (0.997, 0.741, 0.5), (0.993, 0.851, 0.583),
              (0.987, 0.991, 0.75)],
    "Plasma": [(0.05, 0.03, 0.528), (0.163, 0.02, 0.587), (0.258, 0.014, 0.615), (0.349, 0.004, 0.631),
               (0.44, 0.007, 0.628), (0.526, 0.05, 0.601), (0.604, 0.119, 0.555), (0.674, 0.183, 0.498),
               (0.736, 0.247, 0.445), (0.794, 0.309, 0.394), (0.847, 0.37, 0.344), (0.896, 0.435, 0.295),
               (0.938, 0.506, 0.245), (0.971, 0.583, 0.195), (0.991, 0.669, 0.145), (0.993, 0.761, 0.114),
               (0.94, 0.975, 0.131)],
}


def check_display_options(colormap: Any = "Inferno", opacity: Any = 0.5, display_threshold: Any = None,
                          make_segmentation: Any = False, show: Any = True, show_3d: Any = False) -> None:
    """Refuse display options the outputs could not be shown with, before any work is done.

    ``colormap``: one of :data:`COLORMAPS`; ``opacity``: a number in [0, 1]; ``display_threshold``: None or a
    finite number (anomaly map units); ``make_segmentation``, ``show``, ``show_3d``: True or False.
    """
    if colormap not in COLORMAPS:
        raise InputError(f"Unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}.")
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"opacity must be between 0 and 1 (0 transparent, 1 opaque); got {opacity!r}.")
    if display_threshold is not None and (isinstance(display_threshold, bool) or not isinstance(
            display_threshold, (int, float)) or not np.isfinite(display_threshold)):
        raise InputError(f"display_threshold must be a number (anomaly map values shown from there up) or None "
                         f"(the model's threshold); got {display_threshold!r}.")
    for name, value in (("make_segmentation", make_segmentation), ("show", show), ("show_3d", show_3d)):
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"{name} must be True or False; got {value!r}.")


def display_image(node: Any, out: Volume, input_node: Any) -> None:
    """CT (HU): window/level presets, starting from the input's window if it is CT too; MR: auto window."""
    display = node.GetDisplayNode()
    scene = node.GetScene()
    grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey") if scene else None
    if grey is not None:
        display.SetAndObserveColorNodeID(grey.GetID())
    if out.metadata.get("modality") == "CT" or out.metadata.get("units") == "HU":
        display.AutoWindowLevelOff()
        display.ResetWindowLevelPresets()
        for _name, window, level in CT_WINDOW_PRESETS:
            display.AddWindowLevelPreset(window, level)
        source = input_node.GetDisplayNode() if input_node is not None else None
        input_is_ct = input_node is not None and node_modality(input_node)[0] == "CT"
        if source is not None and input_is_ct and source.IsA("vtkMRMLScalarVolumeDisplayNode"):
            display.SetWindowLevel(source.GetWindow(), source.GetLevel())
        else:
            display.SetWindowLevelFromPreset(0)
    else:
        display.AutoWindowLevelOn()


def colormap_node(scene: Any, name: str = "Inferno") -> Any:
    """The scene's colour node called ``name`` (3D Slicer has Inferno, Viridis, Magma, Plasma); if the scene has
    none, a 256-entry ``vtkMRMLColorTableNode`` "MedGAN <name>" made (once) from the map's anchors."""
    if name not in COLORMAP_ANCHORS:
        raise InputError(f"Unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}.")
    for candidate in (name, f"MedGAN {name}"):
        nodes = scene.GetNodesByName(candidate)
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.IsA("vtkMRMLColorNode"):
                return node
    import slicer

    anchors = np.array(COLORMAP_ANCHORS[name])
    positions = np.linspace(0.0, 1.0, len(anchors))
    samples = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)], axis=1)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(f"MedGAN {name}")
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetNamesFromColors()
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, float(r), float(g), float(b), 1.0)
    node.SetAttribute("Category", "MedGAN")
    scene.AddNode(node)
    return node


def display_anomaly_map(node: Any, colormap: str = "Inferno", display_threshold: float | None = None,
                        upper: float | None = None) -> Any:
    """Show an anomaly map in colour: ``colormap`` over [0, upper], values below ``display_threshold`` transparent,
    and a colour legend. Returns the legend display node (or None where the colour logic is unavailable)."""
    import slicer

    scene = node.GetScene()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colormap_node(scene, colormap).GetID())
    values = array_from_node(node)
    if upper is None:
        upper = float(np.percentile(values[values > 0], 99.9)) if (values > 0).any() else 1.0
    upper = max(float(upper), 1e-6)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, upper)
    if display_threshold is None:
        stored = node.GetAttribute(ATTRIBUTE_PREFIX + "threshold")
        display_threshold = float(stored) if stored else 0.0
    display.AutoThresholdOff()
    display.SetThreshold(float(display_threshold), float(max(values.max(), upper)) + 1.0)
    display.ApplyThresholdOn()
    display.SetInterpolate(1)
    legend = None
    try:
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
    except (AttributeError, TypeError):  # older MRML without colour legends
        legend = None
    if legend is not None:
        legend.SetTitleText("Anomaly (residual)")
        legend.SetLabelFormat("%.2f")
        legend.SetVisibility(True)
    return legend



def nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    """Every node of ``class_name`` (subclasses included) in the scene."""
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def show_in_slice_views(scene: Any, input_node: Any, output_node: Any, opacity: float = 0.5) -> None:
    """Show a result next to its input in the scene's slice views (no views: nothing to do).

    * anomaly map: input as background and the map as a coloured foreground at ``opacity`` in every view;
    * segmentation: input as background in every view (the segments draw themselves);
    * image: side-by-side layout (where the scene has a layout node) with the input in Red and the output in
      Yellow, same orientation, views linked; without that layout, the output as background everywhere.
    """
    composites = {c.GetLayoutName(): c for c in nodes_of_class(scene, "vtkMRMLSliceCompositeNode")}
    if not composites:
        return
    kind = output_node.GetAttribute(ATTRIBUTE_PREFIX + "kind") or "image"
    input_id = input_node.GetID() if input_node is not None else None
    if kind == "anomaly_map":
        for composite in composites.values():
            composite.SetBackgroundVolumeID(input_id)
            composite.SetForegroundVolumeID(output_node.GetID())
            composite.SetForegroundOpacity(float(opacity))
        return
    if output_node.IsA("vtkMRMLSegmentationNode"):
        for composite in composites.values():
            composite.SetBackgroundVolumeID(input_id)
        return
    layouts = nodes_of_class(scene, "vtkMRMLLayoutNode")
    if layouts and "Red" in composites and "Yellow" in composites:
        import slicer

        layouts[0].SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        slices = {s.GetLayoutName(): s for s in nodes_of_class(scene, "vtkMRMLSliceNode")}
        if "Red" in slices and "Yellow" in slices:
            slices["Yellow"].SetOrientation(slices["Red"].GetOrientation())
        composites["Red"].SetBackgroundVolumeID(input_id)
        composites["Yellow"].SetBackgroundVolumeID(output_node.GetID())
        for name in ("Red", "Yellow"):
            composites[name].SetForegroundVolumeID(None)
            composites[name].SetLinkedControl(1)
        return
    for composite in composites.values():
        composite.SetBackgroundVolumeID(output_node.GetID())
        composite.SetForegroundVolumeID(None)


def is_anomaly_map(node: Any) -> bool:
    """A MedGAN anomaly map, told by its node attribute ``MedGAN.kind`` (saved with the scene), not by who made it."""
    return (node is not None and node.IsA("vtkMRMLScalarVolumeNode")
            and node.GetAttribute(ATTRIBUTE_PREFIX + "kind") == "anomaly_map")


def anomaly_map_nodes(scene: Any) -> list[Any]:
    """Every anomaly map in the scene, oldest first (those of this session and of a reloaded scene alike)."""
    return [node for node in nodes_of_class(scene, "vtkMRMLScalarVolumeNode") if is_anomaly_map(node)]


def update_anomaly_display(node: Any, scene: Any = None, *, opacity: float | None = None,
                           display_threshold: float | None = None, colormap: str | None = None,
                           show: bool = False) -> None:
    """Change an anomaly map's look after the run (the panel's opacity/threshold/colour map controls act on the
    selected map); ``show=True`` also puts it over the volume it was made from in every slice view.

    Any anomaly map qualifies (:func:`is_anomaly_map`), also one of a scene saved and loaded again; another node
    is refused. Options as :func:`check_display_options` checks them; None leaves that setting as it is.
    """
    if not is_anomaly_map(node):
        name = node.GetName() if node is not None else "None"
        raise InputError(f"{name!r} is not a MedGAN anomaly map (its MedGAN.kind attribute is not anomaly_map); "
                         f"choose one of the maps MedGAN made.")
    check_display_options(colormap or "Inferno", 0.5 if opacity is None else opacity, display_threshold)
    scene = scene or node.GetScene()
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if colormap is not None:
        display.SetAndObserveColorNodeID(colormap_node(scene, colormap).GetID())
    if display_threshold is not None:
        display.SetLowerThreshold(float(display_threshold))
    if show:
        show_in_slice_views(scene, input_of(node), node, opacity=0.5 if opacity is None else float(opacity))
    elif opacity is not None:
        for composite in nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
            if composite.GetForegroundVolumeID() == node.GetID():
                composite.SetForegroundOpacity(float(opacity))
