"""Verdict sentences grounded in the measured finding.

The template verdict is the fallback every language-model verdict is checked
against: it states the decision, where, how large and the score against the
threshold, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .findings import size_words

if TYPE_CHECKING:
    from .inspector import InspectionResult


def template_verdict(result: InspectionResult) -> str:
    """One sentence for the operator, built only from the decoder's numbers."""
    obj = result.object_name
    numbers = f"score {result.score:.2f} vs threshold {result.threshold:.2f}"
    if not result.is_anomalous:
        return f"The {obj} looks normal ({numbers}); pass it."
    main = result.regions[0]
    count = len(result.regions)
    what = "1 defect region" if count == 1 else f"{count} defect regions"
    return (
        f"The {obj} is anomalous ({numbers}) with {what}, the strongest {size_words(main.area_fraction)} "
        f"at the {main.location} covering {main.area_fraction:.1%} of the image; reject it."
    )
