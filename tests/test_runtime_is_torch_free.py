"""The edge runtime never loads torch or transformers, not even while inspecting and refitting."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import numpy as np
import edge_anomaly
from edge_anomaly import Inspector
from edge_anomaly.cli import main
import edge_anomaly.runtime.backends, edge_anomaly.runtime.onnxruntime_backend
import edge_anomaly.runtime.mqtt_sink, edge_anomaly.runtime.live_page, edge_anomaly.runtime.bench
import edge_anomaly.runtime.triton_backend, edge_anomaly.runtime.triton_server, edge_anomaly.runtime.serve_process
insp = Inspector.load(sys.argv[1], backend="onnxruntime-cpu")
result = insp.inspect(np.zeros((96, 96, 3), np.uint8))
insp.add_normal_shots([np.full((96, 96), 128, np.uint8)])
insp.verdict(result)
main(["inspect", sys.argv[1], sys.argv[2], "--json"])
main(["bench", sys.argv[1], "--frames", "10", "--warmup", "2"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "tensorflow"))
print(json.dumps(heavy))
"""


def test_runtime_never_imports_torch(bundle_dir, synth_root):
    image = next((synth_root / "fabric" / "test" / "good").iterdir())
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle_dir), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
