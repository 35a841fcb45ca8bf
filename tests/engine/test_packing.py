"""Padding-free batches (inference/engine/packing.py): the packing itself, and packed runners that embed
exactly as padded ones do on the real models, or are not used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from inference import catalog
from inference.engine import packing, text
from inference.engine.packing import (
    BIAS_INPUT,
    MASKED,
    POSITION_INPUT,
    pack,
    pool_spans,
    write_packed_graph,
    write_packed_graph_apart,
)
from inference.engine.text import OnnxTextRunner
from inference.engine.types import EmbedRequest, InputType, Kind
from tests.conftest import MINILM, MINILM_L3


def test_short_inputs_share_a_row_each_seeing_only_itself() -> None:
    inputs = [[11, 12, 13, 14, 15], [21, 22, 23], list(range(100, 130)), [31, 32]]
    batch = pack(inputs, pad_id=0)
    assert batch.input_ids.shape == (1, 40)  # 40 tokens in one row, where padded would be 4 x 30
    for index, ids in enumerate(inputs):
        row, start, end = batch.spans[index]
        assert batch.input_ids[row, start:end].tolist() == ids
        assert batch.position_ids[row, start:end].tolist() == list(range(len(ids)))  # positions restart
    bias = batch.attention_bias[0, 0]
    for index, (_, start, end) in enumerate(batch.spans):
        assert (bias[start:end, start:end] == 0).all()  # an input sees all of itself
        for _, other_start, other_end in batch.spans[:index] + batch.spans[index + 1 :]:
            assert (bias[start:end, other_start:other_end] == MASKED).all()  # and none of its neighbours


def test_padding_is_never_seen_and_never_more_than_a_padded_batch_would_have() -> None:
    lengths = [100, 60, 30]  # one row of 190 would make every token attend too wide
    batch = pack([[i + 1] * n for i, n in enumerate(lengths)], pad_id=0)
    assert batch.input_ids.shape == (2, 100)  # against 3 x 100 padded; 10 tokens of padding are left
    for row, start, end in batch.spans:
        padding = batch.input_ids[row] == 0
        assert not padding[start:end].any()
        assert (batch.attention_bias[row, 0, start:end][:, padding] == MASKED).all()


def test_mixed_lengths_are_balanced_over_rows() -> None:
    # 210 tokens in 3 rows of 70, no padding; first-fit into rows of the longest input's width would
    # leave 4 x 60 with 30 tokens of padding, which costs more than the wider rows' attention.
    batch = pack([[i + 1] * n for i, n in enumerate([60, 50, 40, 30, 20, 10])], pad_id=0)
    assert batch.input_ids.shape == (3, 70)
    assert (batch.input_ids != 0).all()


def test_every_layout_holds_each_input_once_and_costs_no_more_than_padding() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        lengths = rng.integers(1, 200, size=int(rng.integers(1, 33))).tolist()
        rows = packing._layout(lengths)
        assert sorted(index for members in rows for index in members) == list(range(len(lengths)))
        width = max(sum(lengths[index] for index in members) for members in rows)
        assert width <= max(max(lengths), packing.MAX_ROW_WIDTH)
        padded = packing._layout_cost(len(lengths), max(lengths))
        assert packing._layout_cost(len(rows), width) <= padded
        assert len(rows) * width <= len(lengths) * max(lengths)  # within the pool's token budget


def test_inputs_of_one_length_stay_one_to_a_row_as_in_a_padded_batch() -> None:
    # Packing 6 of them into a 128-token row would save no padding and make every token attend wider.
    batch = pack([[7] * 20] * 16, pad_id=0)
    assert batch.input_ids.shape == (16, 20)


def requests(model: str) -> list[EmbedRequest]:
    texts = [
        "",
        "x",
        "Qdrant is a vector database written in Rust.",
        "short query",
        "word " * 400,  # truncated to the context window: a row of its own
        *(f"sentence number {i} about vector search and embeddings" for i in range(20)),
    ]
    return [EmbedRequest(model, Kind.DOCUMENT, InputType.TEXT, t) for t in texts]


@pytest.mark.parametrize("model", [MINILM, MINILM_L3])
def test_packed_batches_embed_as_padded_ones(models_dir: Path, model: str) -> None:
    spec = catalog.find(model).spec  # type: ignore[union-attr]
    path = catalog.installed_path(models_dir, model)
    assert path is not None
    packed = OnnxTextRunner(spec, path, packing=True, solo_threads=2)
    padded = OnnxTextRunner(spec, path, packing=False)
    assert packed.packed and not padded.packed
    assert packed.solo_session is not None
    assert {i.name for i in packed.session.get_inputs()} >= {"packed_position_ids", "packed_attention_bias"}
    batch = requests(model)
    for got, expected in (
        (packed.embed(batch), padded.embed(batch)),
        (packed.embed(batch[:4], alone=True), padded.embed(batch[:4])),  # the solo session is packed too
    ):
        assert [r.tokens for r in got] == [r.tokens for r in expected]  # billing unchanged
        for a, b in zip(got, expected, strict=True):
            va, vb = np.asarray(a.vector), np.asarray(b.vector)
            assert float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))) >= 0.99999


def test_the_nan_guard_after_softmax_is_dropped_and_changes_nothing(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    l6 = catalog.installed_path(models_dir, MINILM)
    assert l6 is not None
    source = l6 / "model.onnx"
    assert any(n.op_type == "IsNaN" for n in onnx.load(str(source)).graph.node)  # the export's guard
    assert write_packed_graph(source, "last_hidden_state", tmp_path / "lean.onnx")
    assert not any(n.op_type in ("IsNaN", "Where") for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node)
    monkeypatch.setattr(packing, "_drop_nan_guards", lambda graph, softmaxes: None)
    assert write_packed_graph(source, "last_hidden_state", tmp_path / "guarded.onnx")

    ids = [[101, 7000, 2003, 102], [101, 2460, 102], [101, 102]]
    batch = pack(ids, 0)
    feeds = {
        "input_ids": batch.input_ids,
        POSITION_INPUT: batch.position_ids,
        BIAS_INPUT: batch.attention_bias,
        "token_type_ids": np.zeros_like(batch.input_ids),
    }
    outputs = [
        ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for name in ("lean.onnx", "guarded.onnx")
    ]
    assert np.array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    ("model", "output", "layers"),
    [(MINILM, "last_hidden_state", 6), (MINILM_L3, "onnx::Shape_422", 3)],  # dynamo's and the old export
)
def test_each_gelu_becomes_one_node_and_changes_nothing(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, output: str, layers: int
) -> None:
    path = catalog.installed_path(models_dir, model)
    assert path is not None
    source = path / "model.onnx"
    assert write_packed_graph(source, output, tmp_path / "fused.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert ops.count("Gelu") == layers and "Erf" not in ops
    monkeypatch.setattr(packing, "_fuse_gelu", lambda graph: 0)
    assert write_packed_graph(source, output, tmp_path / "plain.onnx")
    assert "Erf" in [n.op_type for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node]

    batch = pack([[101, 7000, 2003, 102], [101, 2460, 1999, 3000, 5000, 102], [101, 102]], 0)
    outputs = []
    for name in ("fused.onnx", "plain.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        feeds = {
            "input_ids": batch.input_ids,
            POSITION_INPUT: batch.position_ids,
            BIAS_INPUT: batch.attention_bias,
        }
        if "token_type_ids" in {i.name for i in session.get_inputs()}:
            feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
        outputs.append(session.run([output], feeds)[0])
    assert np.allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)


def test_a_graph_without_attention_does_not_fit(tmp_path: Path) -> None:
    table = helper.make_tensor("embeddings.word_embeddings.weight", TensorProto.FLOAT, [10, 4], [0.1] * 40)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["out"])],
        "lookup",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", 4])],
        [table],
    )
    source = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(source))
    assert not write_packed_graph_apart(source, "out", tmp_path / "packed.onnx")  # in a child process
    assert not (tmp_path / "packed.onnx").exists()


def test_a_file_that_is_no_model_is_an_error_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"not a model")
    with pytest.raises(OSError, match="rewriting the graph failed"):
        write_packed_graph_apart(source, "out", tmp_path / "packed.onnx")


def test_an_input_of_no_tokens_pools_to_zeros() -> None:
    output = np.ones((1, 3, 4), dtype=np.float32)
    pooled = pool_spans(output, [(0, 0, 3), (0, 3, 3)], "mean")
    assert pooled.tolist() == [[1.0] * 4, [0.0] * 4]


def test_a_packed_graph_that_disagrees_with_the_original_is_not_used(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    l6, l3 = (catalog.installed_path(models_dir, m) for m in (MINILM, MINILM_L3))
    assert l6 is not None and l3 is not None
    l3_output = catalog.find(MINILM_L3).spec.onnx_output  # type: ignore[union-attr]

    def wrong_model(source: Path, output: str, destination: Path) -> bool:
        # A real packed graph of another model with the same inputs and width, its output renamed to the
        # one asked for: it loads and runs, and embeds differently.
        assert write_packed_graph(l3 / "model.onnx", l3_output or output, destination)
        model = onnx.load(str(destination))
        old = model.graph.output[0].name
        model.graph.output[0].name = output
        for node in model.graph.node:
            node.output[:] = [output if name == old else name for name in node.output]
            node.input[:] = [output if name == old else name for name in node.input]
        onnx.save(model, str(destination))
        return True

    monkeypatch.setattr(text, "write_packed_graph_apart", wrong_model)
    spec = catalog.find(MINILM).spec  # type: ignore[union-attr]
    runner = OnnxTextRunner(spec, l6)
    assert not runner.packed
    assert "attention_mask" in {i.name for i in runner.session.get_inputs()}  # the original graph is back
    padded = OnnxTextRunner(spec, l6, packing=False)
    batch = requests(MINILM)
    assert [r.vector for r in runner.embed(batch)] == [r.vector for r in padded.embed(batch)]
