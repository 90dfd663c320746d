"""What the language model reads: one prompt format per kind of model.

``tuned``: the default model carries a LoRA adapter trained on exactly this
format (``edge_anomaly.export.verdict_tuning``), so the prompt is only the
finding and the question; short prompts are what make a verdict cost a fraction
of a second on a CPU.

``few-shot``: any other GGUF (a user's own model, or the base model without
its adapter) gets a page of worked examples to continue instead.

Both end where the model's answer starts; the answer ends at a newline.
"""

from __future__ import annotations

from edge_anomaly.grounding import facts
from edge_anomaly.result import InspectionResult
from edge_anomaly.verdict_wording import defect_sentence, normal_sentence

TUNED, FEW_SHOT = "tuned", "few-shot"
STYLES = (TUNED, FEW_SHOT)
HISTORY_TURNS = 3  # follow-up answers keep the last few turns: bounded context

VERDICT_EXAMPLES = (
    (
        "Object: screw. Score 0.41, threshold 0.55. Decision: normal. Regions: none.",
        normal_sentence("screw", "0.41", "0.55"),
    ),
    (
        "Object: cable. Score 1.31, threshold 0.90. Decision: anomalous. Regions: 2. Main region: bottom right, "
        "medium, 4.0% of the image.",
        defect_sentence("cable", 2, "bottom right", "medium", "4.0%", "1.31", "0.90"),
    ),
    (
        "Object: tile. Score 0.22, threshold 0.64. Decision: normal. Regions: none.",
        normal_sentence("tile", "0.22", "0.64"),
    ),
    (
        "Object: hazelnut. Score 0.97, threshold 0.62. Decision: anomalous. Regions: 1. Main region: top left, "
        "small, 1.2% of the image.",
        defect_sentence("hazelnut", 1, "top left", "small", "1.2%", "0.97", "0.62"),
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
FEW_SHOT_HEADER = "Inspection reports. Each verdict states only the facts above it."


def verdict_prompt(result: InspectionResult, style: str = TUNED) -> str:
    """The text the model continues with its verdict."""
    if style == TUNED:
        return f"Facts: {facts(result)}\nVerdict:"
    pages = "".join(f"Facts: {f}\nVerdict: {v}\n\n" for f, v in VERDICT_EXAMPLES)
    return f"{FEW_SHOT_HEADER}\n\n{pages}Facts: {facts(result)}\nVerdict:"


def answer_prompt(result: InspectionResult, history: list[tuple[str, str]], question: str, style: str = TUNED) -> str:
    """The text the model continues with its answer; only the last ``HISTORY_TURNS`` turns are kept."""
    turns = "".join(f"Q: {q}\nA: {a}\n" for q, a in history[-HISTORY_TURNS:])
    own = f"Facts: {facts(result)}\n{turns}Q: {' '.join(question.split())}\nA:"
    if style == TUNED:
        return own
    pages = "\n".join(f"Facts: {f}\nQ: {q}\nA: {a}\n" for f, q, a in ANSWER_EXAMPLES)
    return f"{pages}\n{own}"
