"""Verdicts and follow-up answers, with the template sentence standing in whenever the model cannot.

The template verdict (``verdict_wording.verdict_sentence``) is the fallback every
language-model verdict is checked against: it states the decision, where, how
large and the score against the threshold, and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .protocols import Narrator
from .result import InspectionResult
from .verdict_wording import verdict_sentence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NarratedVerdict:
    """A verdict and where it came from: ``source`` is the model's name or ``"template"``, and
    ``fallback_reason`` says why the template stood in (None when the model spoke)."""

    text: str
    source: str
    fallback_reason: str | None = None


def narrate(narrator: Narrator | None, result: InspectionResult) -> NarratedVerdict:
    """The narrator's verdict, or the template sentence with the reason when there is none or it fails.

    One fallback for every caller (``inspect --verdict``, ``chat``, the stream's verdict worker): a model
    that cannot load or breaks mid-call never costs the operator the verdict itself."""
    if narrator is None:
        return NarratedVerdict(verdict_sentence(result), "template", "no language model")
    try:
        return NarratedVerdict(narrator.verdict(result), getattr(narrator, "name", "llm"))
    except Exception as exc:  # noqa: BLE001  whatever the model's failure, the finding still gets its sentence
        log.warning("language model failed, template verdict used: %s", exc)
        return NarratedVerdict(verdict_sentence(result), "template", f"language model failed: {exc}")


@dataclass
class Conversation:
    """Follow-up questions about one finding (``Inspector.chat``); ``turns`` keeps every question and
    answer, and the model reads the last few of them."""

    result: InspectionResult
    narrator: Narrator | None
    turns: list[tuple[str, str]] = field(default_factory=list)

    def verdict(self) -> NarratedVerdict:
        return narrate(self.narrator, self.result)

    def ask(self, question: str) -> str:
        """The model's answer, or what was measured when there is no model or it fails."""
        answer = None
        if self.narrator is not None:
            try:
                answer = self.narrator.ask(self.result, self.turns, question)
            except Exception as exc:  # noqa: BLE001  as for verdicts: the measured facts stand in
                answer = f"The language model failed ({exc}); what was measured: {verdict_sentence(self.result)}"
        if answer is None:
            answer = f"This bundle has no language model; what was measured: {verdict_sentence(self.result)}"
        self.turns.append((question, answer))
        return answer
