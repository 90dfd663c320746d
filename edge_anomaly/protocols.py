"""What the runtime asks of the things it is handed, as protocols, so it imports none of them.

The stream runs any ``InspectorLike`` (the ``Inspector``, the settling and
zero-shot wrappers, a user's own); verdicts come from any ``Narrator`` (the
bundle's language model, a user's own, or none and the template).
"""

from __future__ import annotations

from typing import Protocol

from .images import ImageLike
from .result import InspectionResult


class Narrator(Protocol):
    """What speaks about a finding (``runtime.llm_verdicts.LazyVerdictModel``, or a user's own)."""

    name: str

    def verdict(self, result: InspectionResult) -> str: ...

    def ask(self, result: InspectionResult, history: list[tuple[str, str]], question: str) -> str | None: ...


class InspectorLike(Protocol):
    """What ``runtime.stream`` runs frames through. An inspector that also has ``encode_frames`` and
    ``decide`` (the ``Inspector``) gets its encoder pipelined with the decoder."""

    narrator: Narrator | None

    def inspect(self, frame: ImageLike, color_order: str = "bgr") -> InspectionResult: ...
