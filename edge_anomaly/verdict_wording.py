"""The one wording of a verdict: what the template says, what the prompts show and what the model is taught.

The template sentence (the fallback for every language-model verdict), the
worked examples a foreign model continues (``runtime.verdict_prompts``) and the
first wording of the tuning targets (``export.verdict_pairs``) all come from
here, so an operator reads the same sentence whichever of them spoke.
"""

from __future__ import annotations

from .findings import size_words
from .result import InspectionResult


def regions_phrase(count: int) -> str:
    """``1 anomalous region`` / ``3 anomalous regions``."""
    return "1 anomalous region" if count == 1 else f"{count} anomalous regions"


def normal_sentence(object_name: str, score: str, threshold: str) -> str:
    """A passed frame; ``score`` and ``threshold`` as they are to be written (two decimals)."""
    return f"The {object_name} looks normal (score {score}, below the threshold {threshold}); pass it."


def defect_opening(object_name: str, count: int, location: str, size: str) -> str:
    """The start of a flagged frame's sentence, up to the main region's size: what a model that strayed is
    given to continue from (``runtime.llm_verdicts``)."""
    what = regions_phrase(1) if count == 1 else f"{regions_phrase(count)}, the main one"
    return f"The {object_name} is defective: {what} at the {location}, {size},"


def defect_sentence(
    object_name: str, count: int, location: str, size: str, percent: str, score: str, threshold: str
) -> str:
    """A flagged frame: how many regions, where and how large the main one is, the numbers, the decision."""
    return (
        f"{defect_opening(object_name, count, location, size)} covering {percent} of the image "
        f"(score {score}, above the threshold {threshold}); reject it."
    )


def verdict_opening(result: InspectionResult) -> str:
    """The sentence's start for this finding: the decision, and for a defect where and how large."""
    if not result.is_anomalous:
        return f"The {result.object_name} looks normal"
    main = result.regions[0]
    return defect_opening(result.object_name, len(result.regions), main.location, size_words(main.area_fraction))


def verdict_sentence(result: InspectionResult) -> str:
    """The template verdict: the sentence built from the decoder's numbers only."""
    score, threshold = f"{result.score:.2f}", f"{result.threshold:.2f}"
    if not result.is_anomalous:
        return normal_sentence(result.object_name, score, threshold)
    main = result.regions[0]
    return defect_sentence(
        result.object_name,
        len(result.regions),
        main.location,
        size_words(main.area_fraction),
        f"{100 * main.area_fraction:.1f}%",
        score,
        threshold,
    )
