"""Join target graphs into one ONNX graph and compute shared parts once.

Targets fitted on the same rows with the same feature options carry identical
feature nodes (tokenizer, TF-IDF vectoriser, one-hot encoders). After joining,
:func:`share_common_nodes` keeps one copy of each such node, so one
onnxruntime call vectorises the text once for all targets instead of once per
target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

# Operators whose outputs differ between two runs on the same inputs; two such
# nodes are never taken as one.
NONDETERMINISTIC_OPS = frozenset(
    {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
)


def merge_graphs(graphs: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """Join target graphs that read the same inputs into one graph.

    Each target's nodes, weights and outputs get the prefix ``<target>/``. The
    inputs keep their names and are shared, so one onnxruntime call scores
    every target and converts the input strings once. Nodes that compute the
    same values in several targets are computed once (:func:`share_common_nodes`).
    """
    import onnx
    from onnx import compose, helper

    inputs: dict[str, Any] = {}
    nodes, weights, outputs, shapes = [], [], [], []
    opsets: dict[str, int] = {}
    for name, graph in graphs.items():
        prefixed = compose.add_prefix(graph, prefix=f"{name}/", rename_inputs=False)
        for item in prefixed.graph.input:
            inputs.setdefault(item.name, item)
        nodes += prefixed.graph.node
        weights += prefixed.graph.initializer
        outputs += prefixed.graph.output
        shapes += prefixed.graph.value_info
        for opset in prefixed.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(
        helper.make_graph(
            nodes, "triage_intake", list(inputs.values()), outputs, weights, value_info=shapes
        ),
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
    )
    merged.ir_version = max(g.ir_version for g in graphs.values())
    share_common_nodes(merged.graph)
    onnx.checker.check_model(merged)
    return merged


def share_common_nodes(graph: onnx.GraphProto) -> int:
    """Remove nodes that compute what an earlier node computes; return how many were removed.

    Two initializers with the same type, shape and values become one. A node is
    the same as an earlier one when it has the same operator, attributes and
    inputs, after those replacements. Its outputs are then read from the
    earlier node. A graph output whose node was removed is kept by an Identity
    node, so the graph's output names do not change. ``graph`` must list its
    nodes in topological order, as ONNX requires. Graphs with control-flow
    subgraphs are left as they are, because a subgraph can read outer names.
    """
    import onnx
    from onnx import helper

    if any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in graph.node
        for attribute in node.attribute
    ):
        return 0

    renamed: dict[str, str] = {}
    kept_weights = []
    weight_by_content: dict[bytes, str] = {}
    for weight in graph.initializer:
        content = onnx.TensorProto()
        content.CopyFrom(weight)
        content.name = ""
        key = content.SerializeToString()
        if key in weight_by_content:
            renamed[weight.name] = weight_by_content[key]
        else:
            weight_by_content[key] = weight.name
            kept_weights.append(weight)

    kept_nodes = []
    node_by_key: dict[tuple, onnx.NodeProto] = {}
    for node in graph.node:
        node_inputs = [renamed.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(node_inputs)
        if node.op_type in NONDETERMINISTIC_OPS:
            kept_nodes.append(node)
            continue
        key = (
            node.domain,
            node.op_type,
            tuple(node_inputs),
            tuple(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name)),
            tuple(bool(name) for name in node.output),
        )
        earlier = node_by_key.get(key)
        if earlier is None:
            node_by_key[key] = node
            kept_nodes.append(node)
            continue
        for name, shared in zip(node.output, earlier.output):
            if name:
                renamed[name] = shared

    removed = len(graph.node) - len(kept_nodes)
    if not renamed:
        return 0
    for output in graph.output:
        if output.name in renamed:
            kept_nodes.append(
                helper.make_node(
                    "Identity",
                    [renamed[output.name]],
                    [output.name],
                    name=f"{output.name}/shared",
                )
            )
    shapes = [v for v in graph.value_info if v.name not in renamed]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_weights)
    del graph.value_info[:]
    graph.value_info.extend(shapes)
    return removed


__all__ = ["NONDETERMINISTIC_OPS", "merge_graphs", "share_common_nodes"]
