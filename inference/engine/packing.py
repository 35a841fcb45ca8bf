"""Padding-free batches for transformer text encoders: several inputs packed end to end into one row.

A padded batch costs `inputs x longest` tokens of model compute, though only the real tokens are wanted:
short sentences of 11-31 tokens waste 17% of it in batches of 4 and 28% in batches of 32. Like TEI's
padding-free batching, we pack the inputs of a batch into fewer rows instead. Each input keeps its own
positions (0, 1, ...) and attends only to its own tokens, through an additive attention bias that masks
every other input of its row, so its output is the one it would have alone (float rounding aside).

The exported graphs take an `attention_mask` of shape (batch, sequence), which cannot say "these tokens
belong together", so `write_packed_graph` rewires a copy: the position-embedding lookup reads a new input
`packed_position_ids`, and every attention's score bias (the term added before its Softmax) is a new
input `packed_attention_bias` of shape (rows, 1, sequence, sequence); the exporter's NaN guard after
each Softmax, which that bias can never trip, is dropped; and each GELU written out as five element-wise
nodes is one `Gelu` node, which onnxruntime fuses with the bias Add before it. A graph this does not fit
is refused, and the runner checks the rewired graph against the original before using it (text.py).

Imports no Django and no app; onnx is imported only when a graph is rewired.
"""

from __future__ import annotations

import heapq
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

POSITION_INPUT = "packed_position_ids"
BIAS_INPUT = "packed_attention_bias"
# No row is wider than this unless one input is: the attention bias is rows x width x width floats.
MAX_ROW_WIDTH = 128
# The row width at which a token's attention work equals the rest of its layer's: a run of `rows` rows of
# `width` tokens costs about rows x width x (1 + width / ATTENTION_WIDTH). 420 was fitted on a grid of
# shapes (bench/packing.py, MiniLM-L6 int8, one onnxruntime thread, Xeon with AVX-512) while masked scores
# were still denormal floats, which made Softmax over wide rows slow. With denormals flushed (denormals.py)
# that grid fits ~1400, attention's FLOP ratio; on real batches of short sentences 250, 800 and 1400 all
# run within +-3% of 420 (bench/packing.py's alternating comparison: noise), so it is kept.
ATTENTION_WIDTH = 420
NO_FIT = 3  # the child's exit status for a graph that does not fit (write_packed_graph_apart)
# What a masked score gets: the most negative float32, as transformers' own extended attention masks do, so
# that Softmax gives it exactly 0 (never -inf: a row with every score masked would give NaN).
MASKED = float(np.finfo(np.float32).min)


def write_packed_graph(source: Path, output: str, destination: Path) -> bool:
    """Write the model at `source` rewired to take packed rows and give only `output` to `destination`;
    False (nothing written) when its graph does not fit.

    It fits when positions come from one Gather on a `position_embeddings` table and every Softmax reads
    an Add of the attention scores and a bias computed from the inputs' shapes and `attention_mask` alone,
    so that once those are replaced nothing else needs `attention_mask`, and `output` is per token.
    """
    import onnx  # heavy and only needed here, once per model load

    model = onnx.load(str(source))
    graph = model.graph
    kept_outputs = [o for o in graph.output if o.name == output]  # other outputs may pool with the mask
    if len(kept_outputs) != 1:
        return False
    del graph.output[:]
    graph.output.extend(kept_outputs)
    producers = {name: node for node in graph.node for name in node.output}
    from_tokens = _data_dependent(graph, "input_ids")

    positions = [n for n in graph.node if n.op_type == "Gather" and "position_embeddings" in n.input[0]]
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    if len(positions) != 1 or not softmaxes:
        return False
    positions[0].input[1] = POSITION_INPUT
    for softmax in softmaxes:
        add = producers.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            return False
        bias = [i for i, name in enumerate(add.input) if name not in from_tokens]
        if len(bias) != 1:  # both terms come from the tokens (no mask), or neither does: not attention
            return False
        add.input[bias[0]] = BIAS_INPUT
    _drop_nan_guards(graph, softmaxes)
    if _fuse_gelu(graph) and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))

    tensor = onnx.helper.make_tensor_value_info
    graph.input.append(tensor(POSITION_INPUT, onnx.TensorProto.INT64, ["rows", "row"]))
    graph.input.append(tensor(BIAS_INPUT, onnx.TensorProto.FLOAT, ["rows", 1, "row", "row"]))
    _prune(graph)
    names = {i.name for i in graph.input}
    if "attention_mask" in names or not {"input_ids", POSITION_INPUT, BIAS_INPUT} <= names:
        return False  # the mask is still read elsewhere (pooling inside the graph, say)
    if len(graph.output[0].type.tensor_type.shape.dim) != 3:
        return False  # not a per-token output (a graph that pools itself)
    onnx.save(model, str(destination))
    return True


def write_packed_graph_apart(source: Path, output: str, destination: Path) -> bool:
    """`write_packed_graph` run in a child process (this file as a script): the parsed model, weights and
    all, never enters this process's heap, where it raised a serving process's peak RSS by ~60 MiB.

    OSError when the child could not run or failed for another reason than a graph that does not fit.
    """
    child = subprocess.run(
        [sys.executable, __file__, str(source), output, str(destination)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if child.returncode == 0:
        return True
    if child.returncode == NO_FIT:
        return False
    raise OSError(f"rewriting the graph failed: {child.stderr.strip()[-500:]}")


def _data_dependent(graph: Any, source: str) -> set[str]:
    """Tensors whose values depend on `source`; dependence through a Shape node alone does not count."""
    reached = {source}
    for node in graph.node:  # onnx nodes are in topological order
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in reached for name in node.input):
            reached.update(node.output)
    return reached


def _drop_nan_guards(graph: Any, softmaxes: Sequence[Any]) -> None:
    """Read each Softmax's output directly where the export guards it with `Where(IsNaN(s), 0, s)`.

    torch's exporter adds that guard for rows whose every score is masked with -inf. The packed bias
    masks with a finite value and every token attends at least to its own segment, so the guard never
    fires. It cost ~2.4% of MiniLM-L6's run time (onnxruntime's profile: IsNaN and Where over the scores)
    and, for the largest batch shape, two more score-sized tensors in the memory arena (bench/dataplane.py
    (5): the web process's peak RSS ~690 -> ~595 MiB).
    """
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name: i for i in graph.initializer}
    for softmax in softmaxes:
        scores = softmax.output[0]
        for isnan in [n for n in consumers.get(scores, []) if n.op_type == "IsNaN"]:
            for where in consumers.get(isnan.output[0], []):
                if (
                    where.op_type == "Where"
                    and where.input[0] == isnan.output[0]  # where NaN,
                    and _is_zero(constants.get(where.input[1]))  # 0,
                    and where.input[2] == scores  # else the scores
                ):
                    guarded = where.output[0]
                    for reader in consumers.get(guarded, []):
                        reader.input[:] = [scores if name == guarded else name for name in reader.input]


def _is_zero(tensor: Any) -> bool:
    """Whether an initializer holds a single 0 (the guard's replacement value)."""
    return _scalar(tensor) == 0.0


def _scalar(tensor: Any) -> float | None:
    """The value of an initializer that holds a single number; None for anything else."""
    if tensor is None:
        return None
    from onnx import numpy_helper

    value = numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _fuse_gelu(graph: Any) -> int:
    """Replace each exact GELU written out as `x * 0.5 * (1 + Erf(x / sqrt(2)))` by one com.microsoft
    `Gelu` node; how many were replaced.

    onnxruntime fuses that subgraph itself only when the two multiplications come in the order torch's
    old exporter wrote; the dynamo export multiplies `0.5` into `1 + Erf` first, so its five nodes stayed
    five passes over the feed-forward layer's widest tensor, and the bias Add before them a sixth. As one
    `Gelu`, onnxruntime fuses it with that Add into one `BiasGelu` pass, with the same arithmetic: outputs
    within float rounding (MiniLM-L6 int8 packed, one thread: 2-6% less CPU per text in batches of 1-32).
    """
    from onnx import helper

    constants = {i.name: i for i in graph.initializer}
    constants.update(  # torch's old exporter writes its scalars as Constant nodes
        (node.output[0], attribute.t)
        for node in graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    )
    producers = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def sole_reader(name: str, op_type: str) -> Any:
        readers = consumers.get(name, [])
        return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None

    def operand(node: Any, name: str) -> str | None:  # a binary node's other input
        rest = [i for i in node.input if i != name]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None

    replaced: dict[str, Any] = {}  # the last node of each GELU -> its Gelu
    dropped: set[int] = set()
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        scale = producers.get(erf.input[0])  # x / sqrt(2), or x * (1 / sqrt(2))
        if scale is None or scale.op_type not in ("Div", "Mul") or len(scale.input) != 2:
            continue
        if sole_reader(scale.output[0], "Erf") is None:  # its output is read elsewhere too: keep it
            continue
        x, divisor = scale.input
        factor = _scalar(constants.get(divisor))
        expected = 2**0.5 if scale.op_type == "Div" else 2**-0.5
        if factor is None or abs(factor - expected) > 1e-6:
            continue
        one = sole_reader(erf.output[0], "Add")
        first = one and sole_reader(one.output[0], "Mul")
        second = first and sole_reader(first.output[0], "Mul")
        if not second or _scalar(constants.get(operand(one, erf.output[0]) or "")) != 1.0:
            continue
        factors = {operand(first, one.output[0]), operand(second, first.output[0])}
        half = [f for f in factors if f != x]
        if x not in factors or len(half) != 1 or _scalar(constants.get(half[0] or "")) != 0.5:
            continue
        replaced[second.output[0]] = helper.make_node(
            "Gelu", [x], list(second.output), name=f"{erf.name}_gelu", domain="com.microsoft"
        )
        dropped.update(id(node) for node in (scale, erf, one, first, second))
    # Each Gelu takes its last node's place: x and every reader of the output keep their order.
    kept = [replaced.get(node.output[0], node) for node in graph.node]
    kept = [node for node in kept if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return len(replaced)


def _prune(graph: Any) -> None:
    """Drop the nodes, initializers and inputs no output needs any more (the old mask's computation)."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    for field, keep in (
        ("node", kept),
        ("initializer", [i for i in graph.initializer if i.name in needed]),
        ("input", [i for i in graph.input if i.name in needed]),
    ):
        items = getattr(graph, field)
        del items[:]
        items.extend(keep)


@dataclass(frozen=True)
class PackedBatch:
    """A batch packed into rows: the model's inputs, and where each input's tokens lie (row, start, end)."""

    input_ids: np.ndarray
    position_ids: np.ndarray
    attention_bias: np.ndarray
    spans: list[tuple[int, int, int]]


def pack(token_ids: Sequence[Sequence[int]], pad_id: int) -> PackedBatch:
    """Pack inputs into rows, in the cheapest layout `_layout` finds.

    Inputs of one length stay one to a row, like a padded batch; inputs of mixed lengths share rows.
    Padding tokens form a segment of their own, which no input attends to. Plain lists first and one array
    each at the end: this runs in a worker holding the GIL (16 inputs: ~0.2 ms with an array write per
    input, ~0.06 ms so).
    """
    lengths = [len(ids) for ids in token_ids]
    rows = _layout(lengths)
    width = max(sum(lengths[index] for index in members) for members in rows)
    flat_ids: list[int] = []
    positions: list[int] = []
    segments: list[int] = []
    spans = [(0, 0, 0)] * len(lengths)
    for row, members in enumerate(rows):
        start = 0
        for index in members:
            length = lengths[index]
            flat_ids.extend(token_ids[index])
            positions.extend(range(length))
            segments.extend([index] * length)
            spans[index] = (row, start, start + length)
            start += length
        padding = width - start
        flat_ids.extend([pad_id] * padding)
        positions.extend([0] * padding)
        segments.extend([-1] * padding)
    shape = (len(rows), width)
    segment = np.array(segments, dtype=np.int64).reshape(shape)
    bias = (segment[:, :, None] != segment[:, None, :]) * np.float32(MASKED)  # 0 within an input
    return PackedBatch(
        np.array(flat_ids, dtype=np.int64).reshape(shape),
        np.array(positions, dtype=np.int64).reshape(shape),
        bias[:, None, :, :],
        spans,
    )


def _layout(lengths: Sequence[int]) -> list[list[int]]:
    """Input indexes in rows: the row count whose balanced layout (`_balanced`) costs least by
    `_layout_cost`, one input per row (a padded batch) if none is cheaper.

    Each row count is tried from many rows (narrow) to few (wide), skipping those that could not win even
    with no padding at all; only the winner's rows are built. Against first-fit into rows of the longest
    input's width, 64 or 128 tokens, this saves 6-14% of the model time of batches of 4-32 short sentences
    (bench/packing.py's sentences, one thread, alternating A/B). A batch of 32 takes ~0.08 ms here, next
    to a model run of ~130 ms. The winner is never costlier than one input per row, and no row is narrower
    than the longest input, so it never computes more tokens than a padded batch: the pool's token budget
    still bounds it.
    """
    count = len(lengths)
    longest = max(lengths)
    total = sum(lengths)
    widest = max(longest, MAX_ROW_WIDTH)
    descending = sorted(lengths, reverse=True)
    best_rows, best_cost = count, _layout_cost(count, longest)
    for rows in range(count - 1, 0, -1):
        narrowest = max(longest, -(-total // rows))
        if narrowest > widest:
            break  # fewer rows only get wider
        if _layout_cost(rows, narrowest) >= best_cost:
            continue
        filled = [0] * rows  # the rows' tokens as `_balanced` fills them (a heap: the emptiest first)
        for length in descending:
            heapq.heapreplace(filled, filled[0] + length)
        width = max(filled)
        cost = _layout_cost(rows, width)
        if width <= widest and cost < best_cost:
            best_rows, best_cost = rows, cost
    return _balanced(lengths, best_rows)


def _balanced(lengths: Sequence[int], rows: int) -> list[list[int]]:
    """Input indexes in `rows` rows: longest first, each into the row with the fewest tokens so far (the
    "longest processing time" rule, whose widest row is within 4/3 of the best possible)."""
    members: list[list[int]] = [[] for _ in range(rows)]
    filled = [(0, row) for row in range(rows)]
    for index in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
        used, row = filled[0]
        members[row].append(index)
        heapq.heapreplace(filled, (used + lengths[index], row))
    return members


def _layout_cost(rows: int, width: int) -> float:
    """Model work for `rows` rows of `width` tokens, relative: the tokens it computes (padding included),
    each dearer the wider its row (attention)."""
    return rows * width * (1 + width / ATTENTION_WIDTH)


def pool_spans(output: np.ndarray, spans: Sequence[tuple[int, int, int]], pooling: str) -> np.ndarray:
    """One vector per input from a packed per-token output: its first token ("cls") or its tokens' mean."""
    if pooling == "cls":
        return np.stack([output[row, start] for row, start, _ in spans])
    # An input of no tokens (a tokenizer without special tokens, an empty text) pools to zeros, as padded.
    return np.stack([output[row, start:end].sum(axis=0) / max(end - start, 1) for row, start, end in spans])


if __name__ == "__main__":  # write_packed_graph_apart's child: source, output, destination
    sys.exit(0 if write_packed_graph(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])) else NO_FIT)
