"""One decoder graph that takes the free bank's shorter matmul when the bank allows it.

A free bank's rows reach everywhere, so the place columns of the distance
matmul (``NearestNeighbourDecoder.patch_distances``) are zero there and only
cost time. The exported decoder is one ONNX ``If``: its condition is
``ReachCheck`` on the bank it is given, its branches the free decoder and the
full one, traced from the same module. One file, not two, because every
backend (ONNX Runtime, OpenVINO, TensorRT, Triton) runs the one
``decoder.onnx`` the bundle signs, and a refit on the edge box that changes
the layout needs no other graph: the bank itself picks the branch, call by
call, so graph and bank cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import compose, helper


def with_free_branch(full: Path, free: Path, check: Path, out: Path) -> None:
    """Write to ``out`` the decoder that runs ``free`` where ``check`` (bank -> bool scalar) holds and
    ``full`` elsewhere; all three are ONNX files of the same opset, ``full`` and ``free`` with the same
    inputs and outputs."""
    full_model, free_model, check_model = (onnx.load(str(path)) for path in (full, free, check))
    condition = compose.add_prefix(check_model, "reach/", rename_inputs=False)
    branch = helper.make_node(
        "If",
        [condition.graph.output[0].name],
        [o.name for o in full_model.graph.output],
        name="free_or_full_bank",
        then_branch=_branch(free_model, "free"),
        else_branch=_branch(full_model, "full"),
    )
    graph = helper.make_graph(
        [*condition.graph.node, branch],
        full_model.graph.name,
        list(full_model.graph.input),
        list(full_model.graph.output),
        initializer=list(condition.graph.initializer),
    )
    model = helper.make_model(graph, opset_imports=list(full_model.opset_import), ir_version=full_model.ir_version)
    model.producer_name = full_model.producer_name
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


def _branch(model: onnx.ModelProto, name: str) -> onnx.GraphProto:
    """``model``'s graph as an ``If`` branch: no inputs of its own (it reads the outer graph's by name), its
    other names prefixed so that the two branches cannot collide."""
    graph = compose.add_prefix(model, f"{name}/", rename_inputs=False).graph
    return helper.make_graph(
        list(graph.node), name, [], list(graph.output), initializer=list(graph.initializer),
        value_info=list(graph.value_info),
    )  # fmt: skip
