"""The command line as a user runs it: export, inspect --json, eval --json, demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_anomaly.cli import main
from edge_anomaly.images import read_image


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_anomaly.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_export_then_inspect_json(synth_root, tmp_path):
    out = tmp_path / "bundle"
    normal = synth_root / "gravel" / "train" / "good"
    done = _cli(
        "export",
        "--normal",
        str(normal),
        "--shots",
        "2",
        "--image-size",
        "64",
        "--object",
        "gravel",
        "--out",
        str(out),
        "--tar",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bundle.tar.gz").is_file()
    images = sorted((synth_root / "gravel" / "test" / "cut").iterdir())[:2]
    overlays = tmp_path / "overlays"
    done = _cli("inspect", str(out), *map(str, images), "--json", "--save-overlay", str(overlays))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 2
    for record, image in zip(records, images):
        assert record["image"] == str(image)
        assert {"score", "threshold", "is_anomalous", "location", "regions"} <= set(record)
        assert record["is_anomalous"] == (record["score"] >= record["threshold"])
    assert len(list(overlays.glob("*_overlay.png"))) == 2


def test_inspect_reports_a_bad_image_and_goes_on(bundle_dir, synth_root, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    good = next((synth_root / "fabric" / "test" / "good").iterdir())
    assert main(["inspect", str(bundle_dir), str(bad), str(good), "--json"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "cannot decode" in lines[0]["error"] and "score" in lines[1]


def test_bad_bundle_is_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["inspect", str(tmp_path), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "Traceback" not in err


def test_export_creates_missing_parent_folders(synth_root, tmp_path):
    out = tmp_path / "not" / "yet" / "there"
    normal = synth_root / "gravel" / "train" / "good"
    assert main(["export", "--normal", str(normal), "--shots", "1", "--image-size", "64", "--out", str(out)]) == 0
    assert (out / "manifest.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["there"]  # no staging folder left behind
    assert json.loads((out / "manifest.json").read_text())["decoder"]["text_free_head"]["weight"] == 0.25


def test_export_without_the_text_free_head(synth_root, tmp_path):
    normal, out = synth_root / "gravel" / "train" / "good", tmp_path / "plain"
    args = ["export", "--normal", str(normal), "--shots", "1", "--image-size", "64", "--head-weight", "0"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["decoder"]["text_free_head"] is None


def test_export_of_an_empty_folder_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", "--normal", str(tmp_path / "empty"), "--out", str(tmp_path / "b")]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_eval_json_report(synth_root, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert (
        main(["eval", str(synth_root / "fabric"), "--shots", "1", "--image-size", "64", "--json", str(report_path)])
        == 0
    )
    report = json.loads(report_path.read_text())
    assert (report["layout"], report["aligned_share"]) == ("free", None)  # one shot cannot show alignment
    assert capsys.readouterr().out.splitlines()[-1].endswith("  free")
    for key in ("image_auroc", "pixel_auroc", "pro", "accuracy", "f1"):
        assert 0.0 <= report[key] <= 1.0
    assert report["count_normal"] == 6 and report["count_anomalous"] == 8
    assert report["true_positives"] + report["false_negatives"] == 8


def test_eval_over_a_root_reports_a_mean(synth_root, tmp_path):
    report_path = tmp_path / "all.json"
    assert main(["eval", str(synth_root), "--shots", "1", "--image-size", "64", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert [c["category"] for c in report["categories"]] == ["fabric", "gravel"]
    mean = sum(c["image_auroc"] for c in report["categories"]) / 2
    assert report["mean"]["image_auroc"] == pytest.approx(mean)


def test_demo_runs_on_bundled_samples(tmp_path):
    done = _cli("demo", "--out", str(tmp_path / "demo"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "decisions match the truth" in done.stdout
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 7
    assert "verdicts: language model 'default' (tuned prompt)" in done.stdout  # the dev install has the model


def test_bench_writes_every_field_and_a_plot(bundle_dir, synth_root, tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    source = synth_root / "fabric" / "test" / "cut"
    done = _cli("bench", str(bundle_dir), "--source", str(source), "--frames", "30", "--warmup", "5",
                "--json", str(out), "--plot", str(plot))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {"machine", "command", "frame_size", "frames", "warmup", "rounds", "runs"} <= set(report)
    assert {"cpu_model", "cpus", "gpu", "platform"} <= set(report["machine"]) and report["frames"] == 30
    run = report["runs"][0]
    assert run["encoder_precision"] == "fp32" and "fp32 encoder" in done.stdout
    assert run["image_size"] == 128 and run["shots"] == 3 and run["backend"].startswith(("onnxruntime", "openvino"))
    assert run["backend_reason"] and run["threads"] >= 1 and run["memory_bank_size"] > 0
    assert run["backends_probed"]["onnxruntime-cpu"] is None and run["backends_probed"]["tensorrt"]  # no engines
    assert set(run["latency_ms"]) == {"preprocess", "encoder", "decoder", "findings", "total"}
    for stage in run["latency_ms"].values():
        assert 0 <= stage["p50"] <= stage["p95"] <= stage["p99"]
    total = run["latency_ms"]["total"]["p50"]
    assert sum(run["latency_ms"][s]["p50"] for s in ("preprocess", "encoder", "decoder")) <= total * 1.5
    assert run["frames_per_second"] > 0 and run["streaming_frames_per_second"] > 0 and run["runtime_peak_rss_mb"] > 0
    assert run["streaming_serial_frames_per_second"] > 0 and run["streaming_pipelined_frames_per_second"] > 0
    held = [read_image(p) for p in sorted(source.iterdir())[:30]]  # a short folder is cycled, not copied
    assert run["frames_held_mb"] == round(sum(image.nbytes for image in held) / 2**20, 1) > 0
    mode = "pipelined" if run["streaming_pipelined"] else "serial"
    assert run["streaming_frames_per_second"] == run[f"streaming_{mode}_frames_per_second"]  # the default mode
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frames/s" in done.stdout
