"""Which NVIDIA GPU this process would run on, found without torch.

cuda-python answers when it is installed (it is what the TensorRT backend uses
for device memory); otherwise ``nvidia-smi``; otherwise there is no GPU we can
use. Jetson boards have no ``nvidia-smi``, so install cuda-python there.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def detect_gpu() -> GpuInfo | None:
    return _from_cuda_python() or _from_nvidia_smi()


def _from_cuda_python() -> GpuInfo | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name, (props.major, props.minor))


def _from_nvidia_smi() -> GpuInfo | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in first:
        return None
    name, cc = (part.strip() for part in first.rsplit(",", 1))
    major, _, minor = cc.partition(".")
    return GpuInfo(name, (int(major), int(minor or 0)))
