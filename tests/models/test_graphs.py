"""Joining target graphs: shared nodes are computed once and outputs do not change."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.graphs import merge_graphs, share_common_nodes


def scaled_sum(scale: list[float], bias: float, name: str = "target") -> onnx.ModelProto:
    """y = sum(x * scale) + bias, with the product as the part targets can share."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("ReduceSum", ["scaled"], ["summed"], keepdims=1),
            helper.make_node("Add", ["summed", "bias"], ["y"]),
        ],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [
            numpy_helper.from_array(np.asarray(scale, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.asarray([bias], dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x})))


X = np.asarray([[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]], dtype=np.float32)


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def assert_outputs_unchanged(merged: onnx.ModelProto, graphs: dict[str, onnx.ModelProto]) -> None:
    outputs = run(merged, X)
    for name, graph in graphs.items():
        np.testing.assert_array_equal(outputs[f"{name}/y"], run(graph, X)["y"], err_msg=name)


def test_shared_product_computed_once():
    graphs = {"a": scaled_sum([2.0, 3.0], 1.0), "b": scaled_sum([2.0, 3.0], -5.0)}
    merged = merge_graphs(graphs)
    assert ops(merged).count("Mul") == 1
    assert ops(merged).count("ReduceSum") == 1
    assert ops(merged).count("Add") == 2
    assert_outputs_unchanged(merged, graphs)


def test_different_weights_not_shared():
    graphs = {"a": scaled_sum([2.0, 3.0], 1.0), "b": scaled_sum([2.0, 4.0], 1.0)}
    merged = merge_graphs(graphs)
    assert ops(merged).count("Mul") == 2
    assert_outputs_unchanged(merged, graphs)


def test_identical_targets_keep_both_output_names():
    graphs = {"a": scaled_sum([1.0, 1.0], 0.5), "b": scaled_sum([1.0, 1.0], 0.5)}
    merged = merge_graphs(graphs)
    assert [o.name for o in merged.graph.output] == ["a/y", "b/y"]
    assert ops(merged).count("Add") == 1
    assert ops(merged).count("Identity") == 1
    outputs = run(merged, X)
    np.testing.assert_array_equal(outputs["a/y"], outputs["b/y"])
    np.testing.assert_array_equal(outputs["a/y"], run(graphs["a"], X)["y"])


def test_same_values_other_shape_not_shared():
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "row"], ["a"]),
            helper.make_node("Add", ["x", "column"], ["b"]),
        ],
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2]),
        ],
        [
            numpy_helper.from_array(np.asarray([[1.0, 2.0]], dtype=np.float32), "row"),
            numpy_helper.from_array(np.asarray([[1.0], [2.0]], dtype=np.float32), "column"),
        ],
    )
    assert share_common_nodes(graph) == 0
    assert len(graph.node) == 2
    assert len(graph.initializer) == 2


def test_random_nodes_not_shared():
    graph = helper.make_graph(
        [
            helper.make_node("RandomUniformLike", ["x"], ["a"], seed=1.0),
            helper.make_node("RandomUniformLike", ["x"], ["b"], seed=1.0),
        ],
        "random",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2]),
        ],
    )
    assert share_common_nodes(graph) == 0
    assert len(graph.node) == 2


def test_graph_with_subgraph_left_alone():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Abs", ["x"], ["b"]),
            helper.make_node(
                "If", ["flag"], ["c"], then_branch=branch, else_branch=branch
            ),
        ],
        "control_flow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [2]),
        ],
    )
    assert share_common_nodes(graph) == 0
    assert len(graph.node) == 3


@pytest.mark.parametrize("op_type", ["Tokenizer", "TfIdfVectorizer", "OneHotEncoder"])
def test_demo_bundle_vectorises_once(demo_bundle, op_type):
    """Demo targets are fitted on the same rows, so their feature nodes are identical."""
    from models.bundle import read_manifest

    manifest = read_manifest(demo_bundle)
    graphs = {
        t["name"]: onnx.load(str(demo_bundle / t["file"]))
        for t in manifest["targets"]
        if t["mode"] == "intake"
    }
    per_target = ops(next(iter(graphs.values()))).count(op_type)
    assert per_target >= 1
    assert ops(merge_graphs(graphs)).count(op_type) == per_target
