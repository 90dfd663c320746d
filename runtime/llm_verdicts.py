"""Verdicts and follow-up answers from a GGUF language model, held to the decoder's finding.

The bundled default, Gemma 3 270M, is a *base* model. It comes with a LoRA
adapter trained on the decoder's own findings
(``edge_anomaly.export.verdict_tuning``), which llama.cpp applies at load time,
and reads the short tuned prompt; any other model reads a page of worked
examples instead (``verdict_prompts``). Each sentence is checked against the
finding (``edge_anomaly.grounding.disagreements``). A sentence that disagrees is
generated again with its opening written for the model from the decoder's
decision and location; if that still disagrees, the template verdict is used.
``counts`` records how often each path was taken.

>>> model = LlamaVerdictModel("bundle/llm.gguf", adapter="bundle/llm-lora.gguf")
>>> model.verdict(result)                  # 'The bottle is defective: 1 anomalous region at the top left ...'
>>> model.ask(result, [], "How large is it?")
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from edge_anomaly.errors import BackendError
from edge_anomaly.grounding import answer_disagreements, disagreements
from edge_anomaly.result import InspectionResult
from edge_anomaly.verdict_wording import verdict_opening, verdict_sentence

from .llama_loading import load_llama
from .verdict_prompts import FEW_SHOT, STYLES, TUNED, answer_prompt, verdict_prompt

MAX_TOKENS = 64


@dataclass(frozen=True)
class VerdictTrace:
    text: str  # what the operator gets
    first: str  # the model's unchecked first sentence
    path: str  # "faithful", "steered" or "template"


class LlamaVerdictModel:
    """A llama.cpp model on the CPU (or the GPU llama.cpp was built for), one call at a time."""

    name = "llm"

    def __init__(
        self,
        gguf: str | Path,
        adapter: str | Path | None = None,
        style: str | None = None,
        n_ctx: int = 2048,
        threads: int = 0,
    ) -> None:
        """``adapter``: a GGUF LoRA file applied to ``gguf``. ``style``: the prompt format, by default
        ``tuned`` with an adapter and ``few-shot`` without. ``threads=0``: all cores but one, which stays
        with the frame loop (on 2 cores, with the model on 1 thread at lower priority, the stream's frame
        p99 stayed within 1.1x of an idle model's)."""
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise BackendError(
                "verdicts from a language model need llama-cpp-python: pip install llama-cpp-python"
            ) from None
        for path in (gguf, adapter):
            if path is not None and not Path(path).is_file():
                raise BackendError(f"language model file {path} does not exist")
        self.style = style or (TUNED if adapter else FEW_SHOT)
        if self.style not in STYLES:
            raise BackendError(f"unknown prompt style {self.style!r}: expected one of {STYLES}")
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) - 1)
        try:
            with _native_stderr_silenced():
                self._llm = load_llama(
                    model_path=str(gguf),
                    lora_path=str(adapter) if adapter else None,
                    n_ctx=n_ctx,
                    n_threads=self.threads,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"llama.cpp could not load {gguf} (adapter {adapter}): {e}") from None
        self._lock = threading.Lock()
        self.counts = {"faithful": 0, "steered": 0, "template": 0, "answers": 0, "answer_fallbacks": 0}

    def verdict(self, result: InspectionResult) -> str:
        return self.generate(result).text

    def generate(self, result: InspectionResult) -> VerdictTrace:
        """The verdict, with the unchecked first sentence and the path taken (for measuring the guard)."""
        prompt = verdict_prompt(result, self.style)
        first = self._complete(prompt)
        if not disagreements(first, result):
            self.counts["faithful"] += 1
            return VerdictTrace(first, first, "faithful")
        opening = verdict_opening(result)
        steered = opening + self._complete(prompt + " " + opening)
        if not disagreements(steered, result):
            self.counts["steered"] += 1
            return VerdictTrace(steered, first, "steered")
        self.counts["template"] += 1
        return VerdictTrace(verdict_sentence(result), first, "template")

    def ask(self, result: InspectionResult, history: list[tuple[str, str]], question: str) -> str:
        """Answer a follow-up about the finding; an answer that contradicts it is replaced by the facts."""
        text = self._complete(answer_prompt(result, history, question, self.style))
        self.counts["answers"] += 1
        if _answer_contradicts(text, result):
            self.counts["answer_fallbacks"] += 1
            return f"I can only state what was measured: {verdict_sentence(result)}"
        return text

    @property
    def llama(self):
        """The llama.cpp model itself (benchmarks time it); calls on it must not overlap ``verdict``/``ask``."""
        return self._llm

    def _complete(self, prompt: str) -> str:
        with self._lock:
            out = self._llm(prompt, max_tokens=MAX_TOKENS, temperature=0.0, stop=["\n"])
        return out["choices"][0]["text"].strip()


@contextlib.contextmanager
def _native_stderr_silenced():
    """llama.cpp prints notes from C while it loads (a line per adapter tensor); keep the operator's console
    readable. A failed load still raises, with llama-cpp-python's message."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _answer_contradicts(text: str, result: InspectionResult) -> bool:
    """An answer may skip the decision, but must not misplace the defect or invent numbers."""
    return not text or bool(answer_disagreements(text, result))


class LazyVerdictModel:
    """Loads the model on first use, so inspecting frames never pays for a model it may not need."""

    name = "llm"

    def __init__(self, gguf: Path, adapter: Path | None = None, style: str | None = None) -> None:
        self.gguf, self.adapter, self.style = gguf, adapter, style
        self._model: LlamaVerdictModel | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> LlamaVerdictModel:
        """The loaded model; a model that failed to load fails again at once, with the same reason, instead
        of being loaded again for every verdict."""
        with self._lock:
            if self._failure is not None:
                raise BackendError(self._failure)
            if self._model is None:
                try:
                    self._model = LlamaVerdictModel(self.gguf, self.adapter, self.style)
                except BackendError as exc:
                    self._failure = str(exc)
                    raise
            return self._model

    def verdict(self, result: InspectionResult) -> str:
        return self.model.verdict(result)

    def ask(self, result: InspectionResult, history: list[tuple[str, str]], question: str) -> str:
        return self.model.ask(result, history, question)
