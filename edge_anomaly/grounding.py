"""Keeping a language model's verdict true to the decoder's finding.

``facts(result)`` is the finding as the model reads it. ``disagreements(text, result)``
reads a generated sentence back and lists every way it disagrees with the
finding: a defect claimed on a passed frame (or the reverse), a defect placed
in the wrong grid cell (named in English, German, French or Spanish), a number
that is not one of the measured numbers, a score or threshold quoted with the
other's value.
Callers regenerate or fall back to the template verdict when the list is not
empty, and count how often that happens.
"""

from __future__ import annotations

import re

from .findings import GRID_WORDS, size_words
from .result import InspectionResult

LOCATIONS = sorted((w for row in GRID_WORDS for w in row), key=len, reverse=True)
# The grid words in the other languages operators ask in; an answer that names a cell in words must name the right one.
LOCALIZED = {
    "de": {
        "top left": "oben links", "top": "oben", "top right": "oben rechts", "left": "links",
        "center": "in der Mitte", "right": "rechts", "bottom left": "unten links", "bottom": "unten",
        "bottom right": "unten rechts",
    },
    "fr": {
        "top left": "en haut à gauche", "top": "en haut", "top right": "en haut à droite", "left": "à gauche",
        "center": "au centre", "right": "à droite", "bottom left": "en bas à gauche", "bottom": "en bas",
        "bottom right": "en bas à droite",
    },
    "es": {
        "top left": "arriba a la izquierda", "top": "arriba", "top right": "arriba a la derecha",
        "left": "a la izquierda", "center": "en el centro", "right": "a la derecha",
        "bottom left": "abajo a la izquierda", "bottom": "abajo", "bottom right": "abajo a la derecha",
    },
}  # fmt: skip
_CELL_WORDS = {w: w for w in LOCATIONS} | {local: en for words in LOCALIZED.values() for en, local in words.items()}
_DEFECT = re.compile(r"\b(defect\w*|anomal\w*|reject\w*|damage\w*|faulty|flaw\w*|scratch\w*|crack\w*)\b", re.I)
_NEGATED = re.compile(r"\b(no|not|without|free of)\s+(\w+\s+){0,2}(defect\w*|anomal\w*|damage\w*|flaw\w*)", re.I)
_NORMAL = re.compile(r"\b(normal|pass\w*|fine|good|ok|okay|accept\w*)\b", re.I)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?%?")
ANSWER_MAY_OMIT = ("does not report the defect", "does not say where the defect is")
_QUOTED = re.compile(r"\b(score|threshold)\s+(?:of\s+|is\s+|was\s+)?(\d+(?:\.\d+)?)", re.I)


def facts(result: InspectionResult) -> str:
    """The measured finding, in the words and numbers a verdict may use."""
    head = f"Object: {result.object_name}. Score {result.score:.2f}, threshold {result.threshold:.2f}."
    if not result.is_anomalous:
        return f"{head} Decision: normal. Regions: none."
    main = result.regions[0]
    return (
        f"{head} Decision: anomalous. Regions: {len(result.regions)}. Main region: {main.location}, "
        f"{size_words(main.area_fraction)}, {100 * main.area_fraction:.1f}% of the image."
    )


def allowed_numbers(result: InspectionResult) -> set[str]:
    """Every number the facts contain, as it may be written."""
    values = {f"{result.score:.2f}", f"{result.threshold:.2f}", f"{result.score:.1f}", f"{result.threshold:.1f}"}
    for r in result.regions:
        pct = 100 * r.area_fraction
        values |= {f"{pct:.1f}%", f"{pct:.0f}%", f"{pct:.2f}%", f"{pct:.1f}", f"{pct:.0f}"}
    values.add(str(len(result.regions)))
    return values


def disagreements(text: str, result: InspectionResult) -> list[str]:
    """Disagreements between a generated verdict and the finding; empty when it is faithful."""
    problems = []
    stripped = _NEGATED.sub(" ", text)
    claims_defect = bool(_DEFECT.search(stripped))
    claims_normal = bool(_NORMAL.search(text)) or bool(_NEGATED.search(text))
    if result.is_anomalous and not claims_defect:
        problems.append("does not report the defect")
    if not result.is_anomalous and claims_defect:
        problems.append("claims a defect on a frame that passed")
    if result.is_anomalous and claims_normal and not claims_defect:
        problems.append("calls an anomalous frame normal")
    said = cells_named(text)
    if not result.is_anomalous and said:
        problems.append(f"places something at the {said[0]} on a frame that passed")
    if result.is_anomalous and said:
        main = result.regions[0].location
        wrong = [w for w in said if w not in {r.location for r in result.regions}]
        if wrong or main not in said:
            problems.append(f"places the defect at the {(wrong or said)[0]}, the decoder found it at the {main}")
    if result.is_anomalous and not said:
        problems.append("does not say where the defect is")
    allowed = allowed_numbers(result)
    for number in _NUMBER.findall(text):
        if number not in allowed and number.rstrip("%") not in allowed:
            problems.append(f"quotes {number}, which was not measured")
    for name, value in _QUOTED.findall(text):
        measured = result.score if name.lower() == "score" else result.threshold
        if value not in {f"{measured:.2f}", f"{measured:.1f}"}:
            problems.append(f"calls {value} the {name.lower()}, which is {measured:.2f}")
    if ("above" in text.lower() and not result.is_anomalous) or ("below" in text.lower() and result.is_anomalous):
        problems.append("puts the score on the wrong side of the threshold")
    return problems


def answer_disagreements(text: str, result: InspectionResult) -> list[str]:
    """``disagreements`` for a follow-up answer: it answers one question, so it may leave out the decision or the
    location, but must not contradict either, nor invent numbers."""
    return [p for p in disagreements(text, result) if p not in ANSWER_MAY_OMIT]


def cells_named(text: str) -> list[str]:
    """The grid cells a sentence names, in English or a localized word ("unten rechts" -> "bottom right")."""
    found = [
        (m.start(), m.end(), cell)
        for words, cell in _CELL_WORDS.items()
        for m in re.finditer(rf"(?<!\w){re.escape(words)}(?!\w)", text, re.I)
    ]
    inside = {(s, e) for s, e, _ in found for s2, e2, _ in found if (s2, e2) != (s, e) and s2 <= s and e <= e2}
    return list(dict.fromkeys(cell for s, e, cell in sorted(found) if (s, e) not in inside))
