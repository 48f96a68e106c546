"""The synthetic lesion types of the lesion task (no imports: the CLI, the options and the panel list them).

``wmh``: white-matter hyperintensities / MS-like plaques; ``tumour``: a tumour-like core in an oedema shell;
``ischaemic``: a cortical + subcortical wedge (vascular-territory-like). Shapes and locations:
:mod:`MedGANLogic.simulate.lesions`.
"""

LESION_TYPES = ("wmh", "tumour", "ischaemic")
#: What each type is called in outputs (segment names) and the panel.
LESION_TYPE_NAMES = {"wmh": "white-matter hyperintensity (MS-like)", "tumour": "tumour-like lesion with oedema",
                     "ischaemic": "ischaemic lesion"}
#: The panel's words for each type (its lesion-type list, in this order).
LESION_TYPE_LABELS = {"wmh": "White-matter hyperintensity (MS-like)", "tumour": "Tumour-like with oedema",
                      "ischaemic": "Ischaemic"}
