"""edge-anomaly: few-shot industrial anomaly detection with grounded verdicts, on edge boxes.

The SDK imports numpy and OpenCV only; torch lives on the build host
(``edge_anomaly.export``) and never loads here.
"""

__version__ = "0.1.0"

import os

# Before OpenCV is first imported: it reads this once. A 20000 x 20000 image would otherwise be decoded in
# full (8 GB of memory) before anything could refuse it; a user's own setting wins (images.MAX_PIXELS).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(100_000_000))

from .bundle import Bundle, open_bundle
from .errors import BackendError, BundleError, EdgeAnomalyError, InputError
from .fit_options import FitOptions
from .inspector import Inspector
from .result import InspectionResult, Region

__all__ = [
    "BackendError",
    "Bundle",
    "BundleError",
    "EdgeAnomalyError",
    "FitOptions",
    "InputError",
    "InspectionResult",
    "Inspector",
    "Region",
    "__version__",
    "open_bundle",
]
