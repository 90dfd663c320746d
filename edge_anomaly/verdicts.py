"""Verdict sentences grounded in the measured finding.

The template verdict is the fallback every language-model verdict is checked
against: it states the decision, where, how large and the score against the
threshold, and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .findings import size_words

if TYPE_CHECKING:
    from .inspector import InspectionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NarratedVerdict:
    """A verdict and where it came from: ``source`` is the model's name or ``"template"``, and
    ``fallback_reason`` says why the template stood in (None when the model spoke)."""

    text: str
    source: str
    fallback_reason: str | None = None


def narrate(narrator: Any, result: InspectionResult) -> NarratedVerdict:
    """The narrator's verdict, or the template sentence with the reason when there is none or it fails.

    One fallback for every caller (``inspect --verdict``, ``chat``, the stream's verdict worker): a model
    that cannot load or breaks mid-call never costs the operator the verdict itself."""
    if narrator is None:
        return NarratedVerdict(template_verdict(result), "template", "no language model")
    try:
        return NarratedVerdict(narrator.verdict(result), getattr(narrator, "name", "llm"))
    except Exception as exc:  # noqa: BLE001  whatever the model's failure, the finding still gets its sentence
        log.warning("language model failed, template verdict used: %s", exc)
        return NarratedVerdict(template_verdict(result), "template", f"language model failed: {exc}")


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
