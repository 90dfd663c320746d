"""Bundled demo images, made by ``edge_anomaly.synthetic.write_demo_samples`` (project-owned, no licence strings).

Regenerate with ``python -c "from pathlib import Path; from edge_anomaly.samples import SAMPLES_DIR;
from edge_anomaly.synthetic import write_demo_samples; write_demo_samples(SAMPLES_DIR)"``.
"""

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
