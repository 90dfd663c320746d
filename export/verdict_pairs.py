"""Instruction pairs for the verdict model, built from the decoder's own findings.

AnomalyGPT taught Vicuna to talk about defects from simulated anomalies; we do
the same for the small base model. The findings are real outputs of our
decoder on the project's synthetic defect images (``findings_from_decoder``);
each pair is a prompt in the runtime's tuned format and the sentence the model
should write, in several wordings, for:

- the verdict (decision, where, how large, score against threshold);
- follow-up questions: size, location, count, decision, score, and questions
  the decoder cannot answer (the cause, the kind of defect), where the honest
  answer says so; some in German, French or Spanish, answered in that
  language with the English grid words kept in brackets, so the guard can
  still read the location.

Every target is checked with ``edge_anomaly.grounding.disagreements`` before it is
used: the model is only ever shown faithful sentences. Object names and the
score scale are varied so the model copies them from the facts instead of
remembering them; the names used by the benchmarks are held out.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_anomaly.findings import size_words
from edge_anomaly.grounding import LOCALIZED, answer_disagreements, disagreements
from edge_anomaly.result import InspectionResult
from edge_anomaly.runtime.verdict_prompts import HISTORY_TURNS, answer_prompt, verdict_prompt
from edge_anomaly.verdict_wording import defect_sentence, normal_sentence, regions_phrase

# Never the names the benchmarks inspect (brick, grass, gravel, fabric panel, screw, metal plate, juice bottle).
OBJECT_NAMES = (
    "bottle", "cable", "capsule", "carpet", "hazelnut", "leather", "metal nut", "pill", "tile", "toothbrush",
    "transistor", "wood panel", "zipper", "circuit board", "gear", "bracket", "connector", "washer", "bolt",
    "can lid", "label", "weld seam", "glass panel", "rubber seal", "bearing", "cookie", "candle", "pcb",
    "tablet blister", "plastic cap", "spring", "valve body", "ceramic plate", "wire harness", "cast housing",
    "fuse", "button", "coin", "gasket", "textile", "rope", "lens", "keycap", "hinge", "nozzle", "sensor board",
)  # fmt: skip
SCORE_SCALES = (0.3, 3.0)  # findings are rescaled (score and threshold together): the decision is unchanged

Pair = tuple[str, str]

_SIZE = {
    "de": {"tiny": "winzig", "small": "klein", "medium": "mittelgroß", "large": "groß"},
    "fr": {"tiny": "minuscule", "small": "petit", "medium": "moyen", "large": "grand"},
    "es": {"tiny": "diminuto", "small": "pequeño", "medium": "mediano", "large": "grande"},
}
QUESTIONS = {
    ("en", "size"): ("How large is it?", "How big is the defect?", "What size is the anomaly?",
                     "How much of the image is affected?"),
    ("en", "location"): ("Where is the defect?", "Where is it?", "Which part of the image is affected?",
                         "Where should I look?"),
    ("en", "count"): ("How many defects are there?", "How many regions did you find?", "Is there more than one?"),
    ("en", "decision"): ("Should I reject it?", "Is it OK?", "Can this part ship?", "Pass or reject?",
                         "Is it defective?"),
    ("en", "score"): ("What was the score?", "How does the score compare with the threshold?", "How sure are you?"),
    ("en", "unknown"): ("What caused it?", "What kind of defect is it?", "Is it a scratch?", "Is it serious?"),
    ("de", "location"): ("Wo ist der Fehler?", "Wo genau?"),
    ("de", "size"): ("Wie groß ist der Fehler?",),
    ("de", "decision"): ("Soll ich das Teil aussortieren?", "Ist das Teil in Ordnung?"),
    ("fr", "location"): ("Où est le défaut ?", "Où se trouve l'anomalie ?"),
    ("fr", "size"): ("Quelle est la taille du défaut ?",),
    ("fr", "decision"): ("Dois-je rejeter la pièce ?", "La pièce est-elle bonne ?"),
    ("es", "location"): ("¿Dónde está el defecto?", "¿Dónde está?"),
    ("es", "size"): ("¿Qué tamaño tiene el defecto?",),
    ("es", "decision"): ("¿Debo rechazar la pieza?", "¿Está bien la pieza?"),
}  # fmt: skip


def findings_from_decoder(work: Path, per_category: int = 60, seed: int = 1000) -> list[InspectionResult]:
    """Inspect fresh synthetic images (every texture, every defect kind) with 4-shot bundles."""
    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import list_images
    from edge_anomaly.synthetic import TEXTURES, generate_dataset

    n_good = per_category // 3
    roots = generate_dataset(
        work / "data", TEXTURES, 256, seed=seed, n_train=4, n_good=n_good, n_defect=per_category - n_good
    )
    results: list[InspectionResult] = []
    for root in roots:
        bundle = build_bundle(root / "train" / "good", work / f"bundle-{root.name}", options=FitOptions(image_size=256))
        inspector = Inspector(bundle, backend="onnxruntime-cpu", llm="none")
        results += inspector.inspect([p for d in sorted((root / "test").iterdir()) for p in list_images(d)])
    return results


def make_pairs(
    findings: Sequence[InspectionResult], count: int, seed: int = 0, verdict_share: float = 0.4
) -> list[Pair]:
    """``count`` (prompt, target) pairs; targets end with the newline the runtime stops at."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    while len(pairs) < count:
        result = _varied(rng.choice(findings), rng)
        if rng.random() < verdict_share:
            pairs.append((verdict_prompt(result), " " + verdict_text(result, rng) + "\n"))
            continue
        history = [_question_and_answer(result, rng) for _ in range(rng.choice((0, 0, 0, 1, 2, HISTORY_TURNS)))]
        question, answer = _question_and_answer(result, rng)
        pairs.append((answer_prompt(result, history, question), " " + answer + "\n"))
    return pairs


def verdict_text(result: InspectionResult, rng: random.Random) -> str:
    """One faithful verdict, in one of several wordings."""
    obj, s, t = result.object_name, f"{result.score:.2f}", f"{result.threshold:.2f}"
    if not result.is_anomalous:
        return rng.choice(
            (
                normal_sentence(obj, s, t),
                f"No defect found on the {obj}: the score {s} is below the threshold {t}; pass it.",
                f"Pass the {obj}: it looks normal, with a score of {s} below the threshold {t}.",
            )
        )
    loc, size, pct, regions = _main(result)
    return rng.choice(
        (
            defect_sentence(obj, len(result.regions), loc, size, pct, s, t),
            f"Reject the {obj}: the decoder found {regions}, the main one at the {loc} ({size}, {pct} of the "
            f"image), with a score of {s} above the threshold {t}.",
            f"Anomaly on the {obj} at the {loc}: a {size} defect covering {pct} of the image; the score {s} "
            f"is above the threshold {t}, so reject it.",
        )
    )


def answer_text(result: InspectionResult, kind: str, language: str, rng: random.Random) -> str:
    """The faithful answer to a question of ``kind`` asked in ``language``."""
    return _ANSWERS[language](result, kind, rng)


def _question_and_answer(result: InspectionResult, rng: random.Random) -> Pair:
    language = rng.choices(("en", "de", "fr", "es"), weights=(7, 1, 1, 1))[0]
    kind = rng.choice([k for lang, k in QUESTIONS if lang == language])
    answer = answer_text(result, kind, language, rng)
    problems = answer_disagreements(answer, result)
    if problems:
        raise AssertionError(f"unfaithful training answer {answer!r}: {problems}")
    return rng.choice(QUESTIONS[language, kind]), answer


def _varied(result: InspectionResult, rng: random.Random) -> InspectionResult:
    scale = SCORE_SCALES[0] * (SCORE_SCALES[1] / SCORE_SCALES[0]) ** rng.random()
    score, threshold = round(result.score * scale, 2), round(result.threshold * scale, 2)
    if (score >= threshold) != result.is_anomalous or score == threshold:  # rounding must keep the decision
        score, threshold = round(result.score, 2), round(result.threshold, 2)
    varied = dataclasses.replace(result, score=score, threshold=threshold, object_name=rng.choice(OBJECT_NAMES))
    verdict = verdict_text(varied, random.Random(0))
    if disagreements(verdict, varied):  # e.g. a score equal to its threshold at two decimals: not a teaching example
        return result
    return varied


def _main(result: InspectionResult) -> tuple[str, str, str, str]:
    main, n = result.regions[0], len(result.regions)
    return main.location, size_words(main.area_fraction), f"{100 * main.area_fraction:.1f}%", regions_phrase(n)


def _english(result: InspectionResult, kind: str, rng: random.Random) -> str:
    obj, s, t = result.object_name, f"{result.score:.2f}", f"{result.threshold:.2f}"
    if not result.is_anomalous:
        return {
            "size": f"There is no defect to measure: the {obj} passed (score {s}, below the threshold {t}).",
            "location": f"There is no defect: the {obj} looks normal (score {s}, below the threshold {t}).",
            "count": f"None: the {obj} looks normal, no region stands out.",
            "decision": rng.choice((f"Pass it: the {obj} looks normal.", f"The {obj} looks normal, so it passes.")),
            "score": f"The score is {s}, below the threshold {t}, so the {obj} passed.",
            "unknown": f"There is nothing to explain: the {obj} looks normal (score {s}, below the threshold {t}).",
        }[kind]
    loc, size, pct, regions = _main(result)
    n = len(result.regions)
    return {
        "size": f"The main defect is {size}: it covers {pct} of the image.",
        "location": f"The main defect is at the {loc} of the image."
        + ("" if n == 1 else f" There are {n} anomalous regions in all."),
        "count": f"{regions.capitalize()}; the main one is at the {loc}.",
        "decision": f"Reject it: the {obj} is defective at the {loc}.",
        "score": f"The score is {s}, above the threshold {t}, so the {obj} is anomalous.",
        "unknown": "I cannot tell what kind of defect it is or what caused it; the decoder measures where and how "
        f"large: a {size} anomaly at the {loc}, {pct} of the image.",
    }[kind]


def _foreign(language: str) -> Callable[[InspectionResult, str, random.Random], str]:
    def answer(result: InspectionResult, kind: str, rng: random.Random) -> str:
        s, t = f"{result.score:.2f}", f"{result.threshold:.2f}"
        if not result.is_anomalous:
            return {
                "de": f"Es gibt keinen Fehler: das Teil ist in Ordnung (Score {s}, unter der Schwelle {t}).",
                "fr": f"Il n'y a pas de défaut : la pièce est bonne (score {s}, sous le seuil {t}).",
                "es": f"No hay ningún defecto: la pieza está bien (puntuación {s}, por debajo del umbral {t}).",
            }[language]
        loc, size, pct, _ = _main(result)
        where, how = f"{LOCALIZED[language][loc]} ({loc})", _SIZE[language][size]
        return {
            ("de", "location"): f"Der Fehler ist {where}.",
            ("de", "size"): f"Der Fehler ist {how}: er bedeckt {pct} des Bildes.",
            ("de", "decision"): f"Ja, aussortieren: das Teil hat einen Fehler {where}.",
            ("fr", "location"): f"Le défaut est {where}.",
            ("fr", "size"): f"Le défaut est {how} : il couvre {pct} de l'image.",
            ("fr", "decision"): f"Oui, rejetez-la : la pièce a un défaut {where}.",
            ("es", "location"): f"El defecto está {where}.",
            ("es", "size"): f"El defecto es {how}: cubre el {pct} de la imagen.",
            ("es", "decision"): f"Sí, recházala: la pieza tiene un defecto {where}.",
        }[language, kind]

    return answer


_ANSWERS = {"en": _english, "de": _foreign("de"), "fr": _foreign("fr"), "es": _foreign("es")}
