"""A bundle as a native Triton model repository, for a GPU server in the cabinet (``export --triton-repo``).

``edge-anomaly serve`` runs the graphs in Python through PyTriton, which suits a CPU box or a test. On a
GPU server, Triton's own backends run them with no Python in the request path:

    DIR/NAME_encoder/1/model.onnx   onnxruntime backend (or model.plan: the bundle's full-TensorRT encoder)
    DIR/NAME_decoder/1/model.onnx   the decoder with the memory bank baked in as a constant, plus an output
                                    that names the bundle (its manifest sha256), as ``serve`` answers
    DIR/NAME/config.pbtxt           an ensemble: image -> encoder -> decoder -> map, score, sha256

Clients use it exactly as they use ``serve``: ``--backend triton://gpu-server:8000/NAME``, and the digest
check refuses a controller that holds another bundle. The bank is baked in because an ensemble step can
only feed a model its batched inputs; Triton cannot hand the decoder a constant bank beside them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edge_anomaly import bundle_format as fmt
from edge_anomaly.bundle import Bundle
from edge_anomaly.errors import InputError
from edge_anomaly.runtime.triton_protocol import DIGEST, INPUT, MAP, SCORE, model_name

PLAN_PRECISIONS = ("fp16", "int8", "fp32")  # the encoder plan preferred, when the bundle has several


def write_triton_repo(
    bundle: Bundle, out: Path, name: str | None = None, max_batch: int = 8, queue_delay_us: int = 2000
) -> list[Path]:
    """Write the three models of ``bundle`` into the repository ``out`` (created, or one that holds other
    models); returns their folders. A model of the same name already there is refused, never overwritten."""
    name = name or model_name(bundle.root)
    out = Path(out)
    folders = [out / f"{name}_encoder", out / f"{name}_decoder", out / name]
    taken = [f for f in folders if f.exists()]
    if taken:
        raise InputError(f"{taken[0]} exists: the repository already has a model of that name")
    size = bundle.input_size
    for folder in folders:
        (folder / "1").mkdir(parents=True)
    plan = _encoder_plan(bundle)
    if plan is not None:
        shutil.copy2(plan, folders[0] / "1" / "model.plan")
    else:
        shutil.copy2(bundle.path_of(fmt.ROLE_ENCODER), folders[0] / "1" / "model.onnx")
    _write_decoder_with_bank(bundle, folders[1] / "1" / "model.onnx")
    features = [(fmt.ENCODER_OUTPUT, "TYPE_FP32", "[ -1, -1 ]")]
    (folders[0] / "config.pbtxt").write_text(
        _config(
            folders[0].name,
            "tensorrt_plan" if plan is not None else "onnxruntime_onnx",
            max_batch,
            [(INPUT, "TYPE_FP32", f"[ 3, {size}, {size} ]")],
            features,
        )
        + _dynamic_batching(queue_delay_us)
        + "instance_group [ { kind: KIND_GPU, count: 1 } ]\n"
    )
    outputs = [
        (MAP, "TYPE_FP32", f"[ {size}, {size} ]"),
        (SCORE, "TYPE_FP32", "[ 1 ]", ", reshape: { shape: [ ] }"),  # the graph's score is [B]; clients see [B x 1]
        (DIGEST, "TYPE_STRING", "[ 1 ]"),
    ]
    (folders[1] / "config.pbtxt").write_text(
        _config(folders[1].name, "onnxruntime_onnx", max_batch, features, outputs)
        + _dynamic_batching(queue_delay_us)
        + "instance_group [ { kind: KIND_GPU, count: 1 } ]\n"
    )
    (folders[2] / "config.pbtxt").write_text(
        _config(name, "ensemble", max_batch, [(INPUT, "TYPE_FP32", f"[ 3, {size}, {size} ]")], [o[:3] for o in outputs])
        + _ensemble_steps(folders[0].name, folders[1].name)
    )
    return folders


def _encoder_plan(bundle: Bundle) -> Path | None:
    """The bundle's full-TensorRT encoder engine (Triton's tensorrt backend runs full TensorRT plans of its
    own TensorRT version only; RTX engines are for TensorRT for RTX, not for it)."""
    engines = [e for e in bundle.manifest.engines if e.graph == "encoder" and e.flavour == "full"]
    engines.sort(key=lambda e: PLAN_PRECISIONS.index(e.precision) if e.precision in PLAN_PRECISIONS else 9)
    return bundle.root / engines[0].file if engines else None


def _write_decoder_with_bank(bundle: Bundle, out: Path) -> None:
    """The decoder graph with ``memory_bank`` as an initializer instead of an input, and one more output:
    the manifest's sha256, one row per frame (a constant tiled to the batch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(bundle.path_of(fmt.ROLE_DECODER)))
    graph = model.graph
    bank_name = fmt.DECODER_INPUTS[1]
    kept = [i for i in graph.input if i.name != bank_name]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(bundle.memory_bank()), bank_name))
    digest = np.array([[bundle.digest]], dtype=object)
    graph.initializer.append(numpy_helper.from_array(digest, "digest_row"))
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph.node.extend(
        [
            helper.make_node("Shape", [SCORE], ["batch"]),  # score is [B]
            helper.make_node("Concat", ["batch", "one"], ["repeats"], axis=0),
            helper.make_node("Tile", ["digest_row", "repeats"], [DIGEST]),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(DIGEST, TensorProto.STRING, ["batch", 1]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _config(name: str, platform: str, max_batch: int, inputs: list, outputs: list) -> str:
    def tensors(kind: str, items: list) -> str:
        rows = ",\n".join(
            f"  {{ name: \"{n}\", data_type: {t}, dims: {d}{''.join(extra)} }}" for n, t, d, *extra in items
        )
        return f"{kind} [\n{rows}\n]\n"

    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
        + tensors("input", inputs)
        + tensors("output", outputs)
    )


def _dynamic_batching(queue_delay_us: int) -> str:
    return f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"


def _ensemble_steps(encoder: str, decoder: str) -> str:
    return (
        "ensemble_scheduling {\n  step [\n"
        f'    {{ model_name: "{encoder}", model_version: -1,\n'
        f'      input_map {{ key: "{INPUT}", value: "{INPUT}" }},\n'
        f'      output_map {{ key: "{fmt.ENCODER_OUTPUT}", value: "{fmt.ENCODER_OUTPUT}" }} }},\n'
        f'    {{ model_name: "{decoder}", model_version: -1,\n'
        f'      input_map {{ key: "{fmt.ENCODER_OUTPUT}", value: "{fmt.ENCODER_OUTPUT}" }},\n'
        f'      output_map {{ key: "{MAP}", value: "{MAP}" }},\n'
        f'      output_map {{ key: "{SCORE}", value: "{SCORE}" }},\n'
        f'      output_map {{ key: "{DIGEST}", value: "{DIGEST}" }} }}\n'
        "  ]\n}\n"
    )
