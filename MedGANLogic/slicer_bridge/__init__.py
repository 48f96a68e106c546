"""MRML <-> :class:`~MedGANLogic.volume.Volume`: run MedGAN tasks on 3D Slicer nodes, results as new nodes.

Everything here takes the MRML scene as an argument. What it may import: the engine, numpy, scipy, and ``slicer``
(the MRML library: the Slicer application or the ``slicer-core`` wheel) and ``vtk`` only inside functions, so the
engine package keeps importing without Slicer, and this package is tested outside the application on a real
``vtkMRMLScene``. Never Qt or ctk: what the panel shows is the module's business (``MedGANExtension/MedGANLib``).

One job per file:

* :mod:`.nodes` -- node <-> Volume, geometry (IJK->RAS, parent transforms), recorded modality, studies;
* :mod:`.model_choice` -- which models fit a volume (the plan step's checks), the proposed model, importing one;
* :mod:`.outputs` -- output nodes, provenance attributes, segmentations, the all-or-nothing scene transaction;
* :mod:`.display` -- colour maps, the anomaly overlay, CT presets, slice-view layouts;
* :mod:`.running` -- prepare / execute / finish, for one node and for a batch;
* :mod:`.masks` -- a mask from a segment of a segmentation node or a label map (the lesion task's input).

Data flow, split so that a GUI can run inference off its main thread and touch the scene only on it::

    request = prepare_run(scene, input_node, task, model)      # main thread: node -> Volume, the engine's plan
    result = execute(request, progress, cancel)                # any thread: the plan executed, no MRML
    nodes = finish_run(scene, request, result)                 # main thread: Volume(s) -> new nodes, display

:func:`run_on_node` composes the three for console use::

    import slicer
    from MedGANLogic import slicer_bridge
    nodes = slicer_bridge.run_on_node(slicer.mrmlScene, slicer.util.getNode("MRHead"), "anomaly",
                                      model="mr-t2-anomaly", opacity=0.6, make_segmentation=True)

Guarantees: the input node's voxels, IJK->RAS matrix and attributes are never modified; overwriting the input is
refused; nodes are created only after inference succeeded, and if anything fails while they are being made every
node added since is removed again, so a failed or cancelled run leaves the scene's node count unchanged.

Geometry: an output on the input's grid gets the input's IJK->RAS matrix bit for bit (after hardening a linear
parent transform into it); a super-resolved output gets the finer grid of the engine's output Volume (same field
of view). A non-linear parent transform is refused with an explanation.
"""

from .display import (
    COLORMAP_ANCHORS,
    COLORMAPS,
    CT_WINDOW_PRESETS,
    anomaly_map_nodes,
    colormap_node,
    display_anomaly_map,
    is_anomaly_map,
    show_in_slice_views,
    update_anomaly_display,
)
from .masks import mask_from_node
from .model_choice import (
    UnsuitableInputError,
    UnsuitableModalityError,
    import_model,
    model_is_2d,
    models_for,
    models_for_node,
    proposed_model,
)
from .nodes import (
    ATTRIBUTE_PREFIX,
    INPUT_REFERENCE,
    array_from_node,
    header_volume,
    image_data_from_array,
    input_of,
    local_ijk_to_ras,
    matrix_to_numpy,
    node_ijk_to_ras,
    node_modality,
    numpy_to_matrix,
    study_volume_nodes,
    volume_from_node,
)
from .outputs import (
    MAX_CANDIDATE_SEGMENTS,
    SceneTransaction,
    candidate_regions,
    check_output_node,
    nodes_from_result,
    output_name,
    place_beside,
    provenance_attributes,
    terminology_entry,
)
from .running import (
    DISPLAY_OPTIONS,
    Batch,
    RunRequest,
    describe_result,
    execute,
    finish_run,
    prepare_batch,
    prepare_run,
    run_on_node,
    run_on_nodes,
    save_fits,
    split_options,
)

__all__ = ["ATTRIBUTE_PREFIX", "COLORMAPS", "COLORMAP_ANCHORS", "CT_WINDOW_PRESETS", "DISPLAY_OPTIONS",
           "INPUT_REFERENCE", "MAX_CANDIDATE_SEGMENTS", "Batch", "RunRequest", "SceneTransaction",
           "UnsuitableInputError", "UnsuitableModalityError", "anomaly_map_nodes", "array_from_node",
           "candidate_regions", "check_output_node", "colormap_node", "describe_result", "display_anomaly_map",
           "execute", "finish_run", "header_volume", "image_data_from_array", "import_model", "input_of",
           "is_anomaly_map", "local_ijk_to_ras", "mask_from_node", "matrix_to_numpy", "model_is_2d", "models_for",
           "models_for_node",
           "node_ijk_to_ras", "node_modality", "nodes_from_result", "numpy_to_matrix", "output_name", "place_beside",
           "prepare_batch", "prepare_run", "proposed_model", "provenance_attributes", "run_on_node", "run_on_nodes",
           "save_fits", "show_in_slice_views", "split_options", "study_volume_nodes", "terminology_entry",
           "update_anomaly_display",
           "volume_from_node"]
