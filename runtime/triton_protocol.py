"""What a served bundle's Triton model looks like from both ends (``triton_server``, ``triton_backend``).

Input ``image``: normalized frames ``[B x 3 x S x S]`` float32, as ``Preprocessing.batch`` gives them.
Outputs per frame: ``anomaly_map`` ``[S x S]``, ``score`` ``[1]`` and ``manifest_sha256`` ``[1]`` (bytes):
which bundle answered, so a client holding another one is refused rather than answered with its scores.
"""

from __future__ import annotations

import re
from pathlib import Path

from edge_anomaly import bundle_format as fmt

INPUT = fmt.ENCODER_INPUT
MAP, SCORE = fmt.DECODER_OUTPUTS
DIGEST = "manifest_sha256"
OUTPUTS = (MAP, SCORE, DIGEST)


def model_name(bundle_path: Path) -> str:
    """The Triton model name for a bundle: its directory (or tar) name, with what Triton refuses replaced."""
    stem = bundle_path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "bundle"
