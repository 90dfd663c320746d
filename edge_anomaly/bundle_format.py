"""Every name of the bundle format, defined once (the gguf-py ``constants`` habit).

A bundle is a directory (or a tar of one) holding ``manifest.json`` plus the
files it lists. The manifest records the sha256 of each file; the reader
refuses any bundle whose files disagree with it.
"""

FORMAT_NAME = "edge-anomaly-bundle"
FORMAT_VERSION = 4  # 2: bank rows carry place and reach (placement); 3: the manifest is sealed; 4: typed
# sections (``manifest``) with the fit options stored once in ``fit``

MANIFEST = "manifest.json"
MANIFEST_SEAL = "manifest.sha256"  # sha256 of manifest.json: an edited manifest is refused
MANIFEST_SIGNATURE = "manifest.sig"  # optional Ed25519 signature over manifest.json (signing)
ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"
MEMORY_BANK = "memory_bank.npy"
SHOTS_DIR = "shots"

# Roles a listed file may have; the reader knows how to check each one.
ROLE_ENCODER = "encoder"
ROLE_DECODER = "decoder"
ROLE_MEMORY_BANK = "memory_bank"
ROLE_SHOT = "normal_shot"
ROLE_ENGINE = "engine"
ROLE_LLM = "llm"
ROLE_LLM_ADAPTER = "llm_adapter"  # a GGUF LoRA file llama.cpp applies to the llm at load time
ROLES = (ROLE_ENCODER, ROLE_DECODER, ROLE_MEMORY_BANK, ROLE_SHOT, ROLE_ENGINE, ROLE_LLM, ROLE_LLM_ADAPTER)
REQUIRED_ROLES = (ROLE_ENCODER, ROLE_DECODER, ROLE_MEMORY_BANK)

# How the encoder scales each stage's features (manifest ``encoder.feature_norm``): L2 per patch and stage,
# raw, raw divided by one constant per part (its mean patch norm over the shots), or L2 per patch and part,
# then divided by one constant per stage so that each stage's typical nearest-neighbour distance over the
# shots is the same (``export.stage_balance``).
FEATURE_NORMS = ("stage", "none", "shots", "balanced")
DEFAULT_FEATURE_NORM = "stage"

# Graph input and output names, shared by the exporter and every backend.
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "features"
DECODER_INPUTS = ("features", "memory_bank")
DECODER_OUTPUTS = ("anomaly_map", "score")
