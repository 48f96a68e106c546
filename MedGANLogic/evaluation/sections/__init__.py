"""The sections of the ``make eval`` report, one module per model family, in report order.

Each module registers its sections on import with ``@SECTIONS.register("name")``; a section is a function
``(EvalContext) -> SectionResult``. The ``modules`` tuple below says which modules are imported (a missing one is
an error) and so the order of the sections in the report.
"""

from __future__ import annotations

from ...registry import Registry
from ..context import SectionFn

SECTIONS: Registry[SectionFn] = Registry(
    "report section", package=__name__, error=ValueError,
    modules=(".synthesis", ".ldct", ".superres", ".adapt", ".anomaly", ".segmentation", ".lesion"))

__all__ = ["SECTIONS"]
