"""How often language-model verdicts agree with the decoder, before and after tuning, with and without the guard.

    python -m edge_anomaly.benchmarks.verdicts --json benchmarks/results/verdicts-cpu.json
    python -m edge_anomaly.benchmarks.verdicts --real ../shared/data/real \
        --json benchmarks/results/verdicts-real-cpu.json

Findings are the decoder's own outputs (4-shot bundles) on synthetic categories
made with a seed the tuning never used, or on a real MVTec-layout root
(``--real``), whose images and object names the tuning never saw. Each model
(``default``: Gemma 3 270M with the verdict adapter; ``default-base``: the same
model without it, on the few-shot prompt; or a ``.gguf``) writes a verdict for
every finding. Its first, unchecked sentence and the guarded verdict are both
judged against the finding: decision, location of the main region, invented
numbers. On real data the location a verdict names is also compared with the
ground-truth mask's 3x3 cell, and defects claimed on truly normal images are
counted. Also reports prompt and generation speed and verdict latency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge_anomaly.benchmarks.report import command_line, percentiles, write_report
from edge_anomaly.findings import grid_location
from edge_anomaly.grounding import disagreements

_DECISION = ("does not report", "claims a defect", "calls an anomalous", "puts the score", "places something")


def agreement(text: str, result) -> dict[str, bool]:
    """Which parts of a verdict agree with the finding."""
    problems = disagreements(text, result)
    return {
        "decision": not any(p.startswith(_DECISION) for p in problems),
        "location": not any("places the defect" in p or "does not say where" in p for p in problems),
        "numbers": not any("not measured" in p for p in problems),
        "all": not problems,
    }


def mask_cell(mask_path: Path) -> str:
    """The 3x3 cell of the ground truth's largest defect (by area)."""
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    count, _, stats, centroids = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else 0
    x, y = centroids[largest]
    return grid_location(x / mask.shape[1], y / mask.shape[0])


def synthetic_findings(work: Path, per_category: int, size: int) -> list[tuple]:
    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions
    from edge_anomaly.images import list_images
    from edge_anomaly.synthetic import TEXTURES, generate_dataset

    n_good = per_category // 2
    roots = generate_dataset(
        work / "data", TEXTURES, size, seed=21, n_train=4, n_good=n_good, n_defect=per_category - n_good
    )
    findings = []
    for root in roots:
        name = root.name if root.name != "fabric" else "fabric panel"
        bundle = build_bundle(root / "train" / "good", work / f"b-{root.name}", None, name, FitOptions(image_size=size))
        insp = Inspector(bundle, backend="onnxruntime-cpu", llm="none")
        images = [p for d in sorted((root / "test").iterdir()) for p in list_images(d)]
        findings += [(r, path.parent.name != "good", None) for r, path in zip(insp.inspect(images), images)]
    return findings


def real_findings(work: Path, root: Path, per_category: int, size: int) -> list[tuple]:
    from edge_anomaly import Inspector
    from edge_anomaly.evaluation import load_test_set
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.fit_options import FitOptions

    findings = []
    for category in sorted(p for p in root.iterdir() if (p / "test").is_dir()):
        bundle = build_bundle(
            category / "train" / "good",
            work / f"b-{category.name}",
            shots=4,
            object_name=category.name.replace("_", " "),
            options=FitOptions(image_size=size),
        )
        insp = Inspector(bundle, backend="onnxruntime-cpu", llm="none")
        items = load_test_set(category)
        step = max(1, len(items) // per_category) if per_category else 1
        chosen = items[::step][: per_category or None]
        results = insp.inspect([item.path for item in chosen])
        findings += [
            (r, item.is_anomalous, mask_cell(item.mask_path) if item.mask_path else None)
            for r, item in zip(results, chosen)
        ]
    return findings


def run_model(model, findings: list[tuple]) -> dict:
    """Verdicts for every finding, judged against the decoder and, where known, the ground truth."""
    rows, latencies = [], []
    for result, truly_defective, true_cell in findings:
        start = time.perf_counter()
        trace = model.generate(result)
        latencies.append(time.perf_counter() - start)
        rows.append(
            {
                "anomalous": result.is_anomalous,
                "path": trace.path,
                "unguarded": agreement(trace.first, result),
                "guarded": agreement(trace.text, result),
                "truly_defective": truly_defective,
                "true_cell_hit": None if true_cell is None or not result.is_anomalous else true_cell == result.location,
            }
        )

    def rate(kind: str, key: str) -> float:
        chosen = [r for r in rows if r["anomalous"] or key != "location"]
        return round(float(np.mean([r[kind][key] for r in chosen])), 4) if chosen else float("nan")

    truly_normal = [r for r in rows if not r["truly_defective"]]
    with_cell = [r for r in rows if r["true_cell_hit"] is not None]
    report = {
        "unguarded": {k: rate("unguarded", k) for k in ("decision", "location", "numbers", "all")},
        "guarded": {k: rate("guarded", k) for k in ("decision", "location", "numbers", "all")},
        "defect_claimed_on_passed_frames": {
            kind: sum((not r["anomalous"]) and not r[kind]["decision"] for r in rows)
            for kind in ("unguarded", "guarded")
        },
        "truly_normal_images": len(truly_normal),
        "guarded_defect_claims_on_truly_normal_images": sum(r["anomalous"] for r in truly_normal),  # decoder's FPs
        "paths": {p: sum(r["path"] == p for r in rows) for p in ("faithful", "steered", "template")},
        "verdict_latency_s": percentiles(latencies),
    }
    if with_cell:
        report["location_vs_ground_truth_cell"] = {
            "flagged_defective_images": len(with_cell),
            "guarded_verdict_names_the_true_cell": round(float(np.mean([r["true_cell_hit"] for r in with_cell])), 4),
        }
    return report | measure_speed(model.llama)


def measure_speed(llama, prompt_tokens: int = 160, generated_tokens: int = 48) -> dict[str, float]:
    """Prompt-evaluation and generation tokens/s of a llama.cpp model on this machine, from a fresh context."""
    prompt = llama.tokenize(("Inspection reports. " * prompt_tokens).encode())[:prompt_tokens]
    llama.reset()
    start = time.perf_counter()
    llama.eval(prompt)
    prompt_s = time.perf_counter() - start
    start, count = time.perf_counter(), 0
    for _ in llama.generate(prompt, temp=0.0, reset=False):
        count += 1
        if count == generated_tokens:
            break
    gen_s = time.perf_counter() - start
    llama.reset()
    return {
        "prompt_tokens_per_s": round(len(prompt) / prompt_s, 1),
        "generation_tokens_per_s": round(count / gen_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--models", nargs="+", default=["default-base", "default"], help="'default', 'default-base' or .gguf files"
    )
    parser.add_argument("--real", type=Path, help="an MVTec-layout root: findings on its real test images")
    parser.add_argument("--per-category", type=int, default=55, help="test images per category (0: all, real only)")
    parser.add_argument("--image-size", type=int, default=256, help="the bundles' input size")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores but one)")
    args = parser.parse_args(argv)

    from edge_anomaly.export.llm_export import default_model_files
    from edge_anomaly.runtime.llm_verdicts import LlamaVerdictModel

    with tempfile.TemporaryDirectory(prefix="edge-anomaly-verdicts-") as tmp:
        work = Path(tmp)
        if args.real:
            findings = real_findings(work, args.real, args.per_category, args.image_size)
        else:
            findings = synthetic_findings(work, args.per_category, args.image_size)
        models = {}
        for spec in args.models:
            if spec in ("default", "default-base"):
                gguf, adapter = default_model_files(work, spec == "default")
            else:
                gguf, adapter = Path(spec), None
            model = LlamaVerdictModel(gguf, adapter, threads=args.threads)
            models[spec] = {"tuned": adapter is not None, "prompt": model.style, "threads": model.threads}
            models[spec] |= run_model(model, findings)
            del model

    report = {
        "command": command_line("edge_anomaly.benchmarks.verdicts", argv),
        "findings_from": f"real images under {args.real}" if args.real else "synthetic categories, seed 21",
        "findings": len(findings),
        "anomalous_findings": sum(f[0].is_anomalous for f in findings),
        "models": models,
    }
    write_report(args.json, report, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
