"""Verdicts and follow-up answers from a GGUF language model, held to the decoder's finding.

The bundled default, Gemma 3 270M, is a *base* model: it completes text and
follows examples, it does not follow instructions. So the prompt is a page of
inspection reports (facts, then the verdict) and the model writes the next
verdict. Each sentence is checked against the finding
(``edge_anomaly.grounding.check``). A sentence that disagrees is generated
again with its opening written for the model from the decoder's decision and
location; if that still disagrees, the template verdict is used. ``counts``
records how often each path was taken.

>>> model = LlamaVerdictModel("bundle/llm.gguf")
>>> model.verdict(result)                  # 'The bottle is defective: 1 anomalous region at the top left ...'
>>> model.ask(result, [], "How large is it?")
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_anomaly.errors import BackendError
from edge_anomaly.findings import size_words
from edge_anomaly.grounding import LOCATIONS, check, facts
from edge_anomaly.inspector import InspectionResult
from edge_anomaly.verdicts import template_verdict

VERDICT_EXAMPLES = (
    (
        "Object: screw. Score 0.41, threshold 0.55. Decision: normal. Regions: none.",
        "The screw looks normal (score 0.41, below the threshold 0.55); pass it.",
    ),
    (
        "Object: cable. Score 1.31, threshold 0.90. Decision: anomalous. Regions: 2. Main region: bottom right, "
        "medium, 4.0% of the image.",
        "The cable is defective: 2 anomalous regions, the main one at the bottom right covering 4.0% of the image "
        "(score 1.31, above the threshold 0.90); reject it.",
    ),
    (
        "Object: tile. Score 0.22, threshold 0.64. Decision: normal. Regions: none.",
        "The tile looks normal (score 0.22, below the threshold 0.64); pass it.",
    ),
    (
        "Object: hazelnut. Score 0.97, threshold 0.62. Decision: anomalous. Regions: 1. Main region: top left, "
        "small, 1.2% of the image.",
        "The hazelnut is defective: 1 anomalous region at the top left covering 1.2% of the image "
        "(score 0.97, above the threshold 0.62); reject it.",
    ),
)
ANSWER_EXAMPLES = (
    (
        "Object: cable. Score 1.31, threshold 0.90. Decision: anomalous. Regions: 2. Main region: bottom right, "
        "medium, 4.0% of the image.",
        "How large is it?",
        "The main defect covers 4.0% of the image, a medium one.",
    ),
    (
        "Object: screw. Score 0.41, threshold 0.55. Decision: normal. Regions: none.",
        "Where is the defect?",
        "There is no defect: the screw passed (score 0.41, below the threshold 0.55).",
    ),
    (
        "Object: hazelnut. Score 0.97, threshold 0.62. Decision: anomalous. Regions: 1. Main region: top left, "
        "small, 1.2% of the image.",
        "Wo ist der Fehler?",
        "Der Fehler ist oben links (top left).",
    ),
)
HEADER = "Inspection reports. Each verdict states only the facts above it."
MAX_TOKENS = 64
HISTORY_TURNS = 3  # follow-up answers keep the last few turns: bounded context


@dataclass(frozen=True)
class VerdictTrace:
    text: str  # what the operator gets
    first: str  # the model's unchecked first sentence
    path: str  # "faithful", "steered" or "template"


class LlamaVerdictModel:
    """A llama.cpp model on the CPU (or the GPU llama.cpp was built for), one call at a time."""

    name = "llm"

    def __init__(self, gguf: str | Path, n_ctx: int = 2048, threads: int = 0) -> None:
        """``threads=0``: all cores but one, which stays with the frame loop (on 2 cores, with the model on
        1 thread at lower priority, the stream's frame p99 stayed within 1.1x of an idle model's)."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError(
                "verdicts from a language model need llama-cpp-python: pip install llama-cpp-python"
            ) from None
        if not Path(gguf).is_file():
            raise BackendError(f"language model {gguf} does not exist")
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) - 1)
        self._llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=self.threads, verbose=False)
        self._lock = threading.Lock()
        self.counts = {"faithful": 0, "steered": 0, "template": 0, "answers": 0, "answer_fallbacks": 0}

    def verdict(self, result: InspectionResult) -> str:
        return self.generate(result).text

    def generate(self, result: InspectionResult) -> VerdictTrace:
        """The verdict, with the unchecked first sentence and the path taken (for measuring the guard)."""
        prompt = self._verdict_prompt(result)
        first = self._complete(prompt)
        if not check(first, result):
            self.counts["faithful"] += 1
            return VerdictTrace(first, first, "faithful")
        opening = _opening(result)
        steered = opening + self._complete(prompt + " " + opening)
        if not check(steered, result):
            self.counts["steered"] += 1
            return VerdictTrace(steered, first, "steered")
        self.counts["template"] += 1
        return VerdictTrace(template_verdict(result), first, "template")

    def ask(self, result: InspectionResult, history: list[tuple[str, str]], question: str) -> str:
        """Answer a follow-up about the finding; an answer that contradicts it is replaced by the facts."""
        pages = [f"Facts: {f}\nQ: {q}\nA: {a}\n" for f, q, a in ANSWER_EXAMPLES]
        turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in history[-HISTORY_TURNS:])
        prompt = "\n".join(pages) + f"\nFacts: {facts(result)}\n{turns}Q: {question.strip()}\nA:"
        text = self._complete(prompt)
        self.counts["answers"] += 1
        if _answer_contradicts(text, result):
            self.counts["answer_fallbacks"] += 1
            return f"I can only state what was measured: {template_verdict(result)}"
        return text

    def measure_speed(self, prompt_tokens: int = 160, generated_tokens: int = 48) -> dict[str, float]:
        """Prompt-evaluation and generation tokens/s on this machine, from a fresh context."""
        with self._lock:
            prompt = self._llm.tokenize(("Inspection reports. " * prompt_tokens).encode())[:prompt_tokens]
            self._llm.reset()
            start = time.perf_counter()
            self._llm.eval(prompt)
            prompt_s = time.perf_counter() - start
            start, count = time.perf_counter(), 0
            for _ in self._llm.generate(prompt, temp=0.0, reset=False):
                count += 1
                if count == generated_tokens:
                    break
            gen_s = time.perf_counter() - start
            self._llm.reset()
        return {
            "prompt_tokens_per_s": round(len(prompt) / prompt_s, 1),
            "generation_tokens_per_s": round(count / gen_s, 1),
        }

    def _verdict_prompt(self, result: InspectionResult) -> str:
        pages = "".join(f"Facts: {f}\nVerdict: {v}\n\n" for f, v in VERDICT_EXAMPLES)
        return f"{HEADER}\n\n{pages}Facts: {facts(result)}\nVerdict:"

    def _complete(self, prompt: str) -> str:
        with self._lock:
            out = self._llm(prompt, max_tokens=MAX_TOKENS, temperature=0.0, stop=["\n"])
        return out["choices"][0]["text"].strip()


def _opening(result: InspectionResult) -> str:
    if not result.is_anomalous:
        return f"The {result.object_name} looks normal"
    main, count = result.regions[0], len(result.regions)
    what = "1 anomalous region" if count == 1 else f"{count} anomalous regions, the main one"
    return f"The {result.object_name} is defective: {what} at the {main.location}, {size_words(main.area_fraction)},"


def _answer_contradicts(text: str, result: InspectionResult) -> bool:
    """An answer may skip the decision, but must not misplace the defect or invent numbers."""
    problems = check(text, result)
    tolerated = ("does not report the defect", "does not say where the defect is")
    if not text or any(p not in tolerated for p in problems):
        return True
    said_location = any(w in text.lower() for w in LOCATIONS)
    return said_location and not result.is_anomalous


class LazyVerdictModel:
    """Loads the model on first use, so inspecting frames never pays for a model it may not need."""

    name = "llm"

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self._model: LlamaVerdictModel | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> LlamaVerdictModel:
        with self._lock:
            if self._model is None:
                self._model = LlamaVerdictModel(self.gguf)
            return self._model

    def verdict(self, result: InspectionResult) -> str:
        return self.model.verdict(result)

    def ask(self, result: InspectionResult, history: list[tuple[str, str]], question: str) -> str:
        return self.model.ask(result, history, question)
