"""TensorRT backend: the bundle's engines on a CUDA stream, with the same surface as ONNX Runtime.

Torch-free: device memory and copies go through cuda-python
(``cuda.bindings.runtime``). Buffers are allocated once per tensor and grown
when a larger batch or memory bank arrives; each call copies inputs in, runs
``execute_async_v3`` on the backend's stream and copies outputs back.

Executed only where a GPU fits the engine (RTX-class for TensorRT-RTX, the
build GPU for full TensorRT); the tests skip it, visibly, elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.errors import BackendError

from .tensorrt_engines import load_tensorrt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendError(
            "the TensorRT backend needs cuda-python for device memory: pip install cuda-python"
        ) from None
    return cudart


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class _Engine:
    def __init__(self, runtime, path: Path, trt, cudart, stream) -> None:
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"{path}: TensorRT refused the engine (another GPU or TensorRT version?)")
        self._engine, self._trt, self._cudart, self._stream = engine, trt, cudart, stream
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._device: dict[str, tuple[int, int]] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        for name, array in feeds.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            if not self.context.set_input_shape(name, array.shape):
                raise BackendError(f"input {name} of shape {array.shape} is outside the engine's profile")
            ptr = self._buffer(name, array.nbytes)
            _check(
                cudart.cudaMemcpyAsync(
                    ptr, array.ctypes.data, array.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
                ),
                "copy in",
            )
            self.context.set_tensor_address(name, ptr)
        host = {}
        for name in self.outputs:
            host[name] = np.empty(tuple(self.context.get_tensor_shape(name)), np.float32)
            self.context.set_tensor_address(name, self._buffer(name, host[name].nbytes))
        if not self.context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execution failed")
        for name, array in host.items():
            _check(
                cudart.cudaMemcpyAsync(
                    array.ctypes.data,
                    self._device[name][0],
                    array.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                    stream,
                ),
                "copy out",
            )
        _check(cudart.cudaStreamSynchronize(stream), "synchronize")
        return host

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._device.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "free")
            ptr = int(_check(self._cudart.cudaMalloc(nbytes), "malloc"))
            self._device[name] = (ptr, nbytes)
        return ptr

    def close(self) -> None:
        for ptr, _ in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device.clear()


class TensorRTBackend:
    """``encode`` / ``decode`` on TensorRT engines of one flavour and precision."""

    def __init__(self, encoder_engine: Path, decoder_engine: Path, flavour: str, precision: str) -> None:
        trt = load_tensorrt(flavour)
        cudart = _cudart()
        self._cudart = cudart
        self._stream = _check(cudart.cudaStreamCreate(), "stream create")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._encoder = _Engine(self._runtime, encoder_engine, trt, cudart, self._stream)
        self._decoder = _Engine(self._runtime, decoder_engine, trt, cudart, self._stream)
        self.name = f"tensorrt-{flavour}-{precision}"

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self._encoder.run({fmt.ENCODER_INPUT: images})[fmt.ENCODER_OUTPUT]

    def decode(self, features: np.ndarray, memory_bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._decoder.run(dict(zip(fmt.DECODER_INPUTS, (features, memory_bank))))
        return out[fmt.DECODER_OUTPUTS[0]], out[fmt.DECODER_OUTPUTS[1]]

    def close(self) -> None:
        self._encoder.close()
        self._decoder.close()
        self._cudart.cudaStreamDestroy(self._stream)
