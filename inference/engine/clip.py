"""The image side of CLIP-style models: preprocess images like the model's Hugging Face image processor, then
run the ONNX vision encoder.

A model directory holds `model.onnx` (pixel_values [N, 3, H, W] -> image embeddings) and
`preprocessor_config.json` (a Hugging Face CLIPImageProcessor configuration), the layout fastembed uses. The
text side of such a model is an ordinary ONNX text model and needs nothing from this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from .images import FetchPolicy, load_image
from .types import (
    EmbedRequest,
    EmbedResult,
    EngineUnavailable,
    InputType,
    InvalidInput,
    ModelNotInstalled,
    ModelSpec,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

# OpenAI CLIP's normalization constants: Hugging Face's defaults when a config leaves them out.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BATCH_SIZE = 16  # images per ONNX run: 16 x 3 x 224 x 224 float32 is under 10 MB
# Images fetched and decoded at once within one call (network-bound, so threads are fine). Each holds one
# decoded image until it is preprocessed, so this also bounds memory (a 40 M pixel image is ~120 MB).
FETCH_WORKERS = 4

# Resizing the shortest edge of a very elongated image first and cropping after could allocate an enormous
# intermediate (1 x 20000 px -> 224 x 4.5M px). Up to this aspect ratio (resized long side / crop side) the
# plain resize-then-crop path runs, which matches fastembed bit for bit; past it only the region the center
# crop keeps is resampled, which is close but not bit-identical (Pillow takes the box as float32 and rounds
# between its two 8-bit passes). A 64:1 intermediate is 224 x 14336 x 3 bytes, under 10 MB.
_MAX_RESIZE_OVERSHOOT = 64


@dataclass(frozen=True)
class ImagePreprocessor:
    """CLIP image preprocessing (resize shortest edge, center crop, rescale, normalize, HWC -> CHW).

    Follows Hugging Face's CLIPImageProcessor and gives the same arrays as fastembed's
    `Compose.from_config` for the same configuration. Sizes are (height, width).
    """

    do_resize: bool = True
    size: int | tuple[int, int] = 224  # an int is the shortest edge; a pair is an exact (height, width)
    resample: Image.Resampling = Image.Resampling.BICUBIC
    do_center_crop: bool = True
    crop_size: tuple[int, int] = (224, 224)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImagePreprocessor:
        """Build from a `preprocessor_config.json` dict; missing keys take Hugging Face's CLIP defaults.

        Raises ValueError for a configuration this preprocessing cannot follow.
        """
        size = _parse_size(config.get("size", 224), shortest_edge_ok=True)
        crop = _parse_size(config.get("crop_size", 224), shortest_edge_ok=False)
        assert isinstance(crop, tuple)  # shortest_edge_ok=False only returns pairs
        return cls(
            do_resize=bool(config.get("do_resize", True)),
            size=size,
            resample=Image.Resampling(int(config.get("resample", Image.Resampling.BICUBIC))),
            do_center_crop=bool(config.get("do_center_crop", True)),
            crop_size=crop,
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            do_normalize=bool(config.get("do_normalize", True)),
            image_mean=_three_floats(config.get("image_mean", OPENAI_CLIP_MEAN), "image_mean"),
            image_std=_three_floats(config.get("image_std", OPENAI_CLIP_STD), "image_std"),
        )

    @classmethod
    def from_file(cls, path: Path) -> ImagePreprocessor:
        """Build from a `preprocessor_config.json` file."""
        with path.open(encoding="utf-8") as file:
            config = json.load(file)
        if not isinstance(config, dict):
            raise ValueError(f"{path.name} must hold a JSON object")
        return cls.from_config(config)

    def __call__(self, image: Image.Image) -> FloatArray:
        """Turn one image into a float32 (3, H, W) array ready for the vision encoder."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = self._resize(image)
        pixels: npt.NDArray[Any]
        if self.do_center_crop:
            pixels = _center_crop(np.asarray(image).transpose((2, 0, 1)), self.crop_size)
        else:
            pixels = np.asarray(image).transpose((2, 0, 1))
        # The order and dtypes of the arithmetic below mirror fastembed, so results agree exactly.
        if self.do_rescale:
            pixels = (pixels * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            if not np.issubdtype(pixels.dtype, np.floating):
                pixels = pixels.astype(np.float32)
            mean = np.array(self.image_mean, dtype=np.float32).reshape(-1, 1, 1)
            std = np.array(self.image_std, dtype=np.float32).reshape(-1, 1, 1)
            pixels = (pixels - mean) / std
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def _resize(self, image: Image.Image) -> Image.Image:
        if not self.do_resize:
            return image
        if isinstance(self.size, tuple):
            height, width = self.size
            return image.resize((width, height), self.resample)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        crop_height, crop_width = self.crop_size
        if not self.do_center_crop or new_long <= _MAX_RESIZE_OVERSHOOT * max(crop_height, crop_width, 1):
            return image.resize((new_width, new_height), self.resample)
        # Resample only the window the center crop keeps. Pillow's `box` maps output pixels onto the same
        # source coordinates as a full resize and reads the filter's support outside the box, so this is
        # resize-then-crop up to rounding.
        left = max((new_width - crop_width) // 2, 0)
        top = max((new_height - crop_height) // 2, 0)
        right = min(left + crop_width, new_width)
        bottom = min(top + crop_height, new_height)
        scale_x, scale_y = width / new_width, height / new_height
        box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
        return image.resize((right - left, bottom - top), self.resample, box=box)


class OnnxImageRunner:
    """Runs the ONNX vision encoder of a CLIP-style model on images given as URLs, data URLs or base64.

    Images are fetched (under `fetch_policy`) and decoded in :meth:`embed`; :meth:`check` only validates the
    request's shape, so a call with a bad item fails before anything is fetched.
    """

    def __init__(self, spec: ModelSpec, model_dir: Path, *, threads: int, fetch_policy: FetchPolicy) -> None:
        self.spec = spec
        self.model_dir = model_dir
        self.fetch_policy = fetch_policy
        model_path = model_dir / "model.onnx"
        config_path = model_dir / "preprocessor_config.json"
        for required in (model_path, config_path):
            if not required.is_file():
                raise ModelNotInstalled(f"Model {spec.name} is not installed: {required.name} is missing.")
        try:
            self.preprocessor = ImagePreprocessor.from_file(config_path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EngineUnavailable(f"Model {spec.name} has an unusable preprocessor_config.json.") from exc

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one model per worker process; parallelism comes from intra-op
        try:
            self.session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise EngineUnavailable(f"Model {spec.name} could not be loaded.") from exc
        self.providers: list[str] = list(self.session.get_providers())

        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        # Exported CLIP vision models take one input; prefer the conventional name if there are more.
        self.input_name: str = "pixel_values" if "pixel_values" in names else names[0]
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        expected = (3, *self.preprocessor.crop_size)
        if self.preprocessor.do_center_crop and len(shape) == 4:
            for dim, want in zip(shape[1:], expected, strict=True):
                if isinstance(dim, int) and dim != want:
                    raise EngineUnavailable(
                        f"Model {spec.name} expects input {shape}, but its preprocessing yields {expected}."
                    )
        outputs = [o.name for o in self.session.get_outputs()]
        if spec.onnx_output is not None and spec.onnx_output not in outputs:
            raise EngineUnavailable(f"Model {spec.name} has no ONNX output named {spec.onnx_output!r}.")
        self.output_name: str = spec.onnx_output or outputs[0]

    def check(self, request: EmbedRequest) -> None:
        """Refuse requests that are not images given as a string (URL, data URL, base64); fetches nothing."""
        if request.input_type != InputType.IMAGE:
            raise InvalidInput(f"Only image input is supported for {self.spec.name}.")
        if not isinstance(request.data, str):
            raise InvalidInput(
                f"Image input for {self.spec.name} must be a string: "
                "an http(s) URL, a data URL or base64 data."
            )

    def embed(self, requests: Sequence[EmbedRequest], *, alone: bool = False) -> list[EmbedResult]:
        """Fetch and decode every image, run the encoder in batches, and return one vector per request."""
        for request in requests:
            self.check(request)
        pixels = self._load_pixels(requests)
        vectors: list[FloatArray] = []
        for start in range(0, len(pixels), BATCH_SIZE):
            vectors.append(self._run(np.stack(pixels[start : start + BATCH_SIZE])))
        if not vectors:
            return []
        matrix = np.concatenate(vectors)
        return [EmbedResult(vector=row.tolist(), tokens=self.spec.tokens_per_image) for row in matrix]

    def _load_pixels(self, requests: Sequence[EmbedRequest]) -> list[FloatArray]:
        """Fetch, decode and preprocess each image; only the small preprocessed arrays are kept."""

        def load(request: EmbedRequest) -> FloatArray:
            return self.preprocessor(load_image(request.data, self.fetch_policy))

        if len(requests) <= 1:
            return [load(r) for r in requests]
        # Fetching is network-bound: overlap it. `map` re-raises the first failure in request order.
        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(requests))) as pool:
            return list(pool.map(load, requests))

    def _run(self, pixel_values: FloatArray) -> FloatArray:
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: pixel_values})
        except Exception as exc:
            logger.exception("ONNX run failed for %s", self.spec.name)
            raise EngineUnavailable(f"Model {self.spec.name} failed to run.") from exc
        embeddings = np.asarray(output, dtype=np.float32)
        if embeddings.ndim == 3:
            if self.spec.pooling == "cls":
                embeddings = embeddings[:, 0]
            elif self.spec.pooling == "mean":
                embeddings = embeddings.mean(axis=1)
            else:
                raise EngineUnavailable(
                    f"Model {self.spec.name} returns per-patch output, "
                    f"but its pooling is {self.spec.pooling!r}."
                )
        if embeddings.ndim != 2 or embeddings.shape[0] != pixel_values.shape[0]:
            raise EngineUnavailable(f"Model {self.spec.name} returned output of shape {embeddings.shape}.")
        if self.spec.dim is not None and embeddings.shape[1] != self.spec.dim:
            raise EngineUnavailable(
                f"Model {self.spec.name} returned {embeddings.shape[1]} dimensions, expected {self.spec.dim}."
            )
        if self.spec.normalize:
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.maximum(norms, 1e-12)
        return embeddings.astype(np.float32, copy=False)


def _center_crop(pixels: npt.NDArray[Any], crop_size: tuple[int, int]) -> npt.NDArray[Any]:
    """Center-crop a (C, H, W) array, padding with zeros where the image is smaller than the crop."""
    _, height, width = pixels.shape
    crop_height, crop_width = crop_size
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    if top >= 0 and left >= 0:
        return pixels[:, top : top + crop_height, left : left + crop_width]
    # Pad to at least the crop size, centring the image (odd leftovers go to the bottom/right), then crop.
    new_height, new_width = max(height, crop_height), max(width, crop_width)
    padded = np.zeros((pixels.shape[0], new_height, new_width), dtype=np.float32)
    pad_top = (new_height - height + 1) // 2
    pad_left = (new_width - width + 1) // 2
    padded[:, pad_top : pad_top + height, pad_left : pad_left + width] = pixels
    top, left = top + pad_top, left + pad_left
    return padded[:, max(0, top) : top + crop_height, max(0, left) : left + crop_width]


def _parse_size(value: object, *, shortest_edge_ok: bool) -> int | tuple[int, int]:
    """Read a Hugging Face size: an int, {"shortest_edge": n} or {"height": h, "width": w}."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value if shortest_edge_ok else (value, value)
    if isinstance(value, Mapping):
        if "height" in value and "width" in value:
            height, width = int(value["height"]), int(value["width"])
            if height > 0 and width > 0:
                return (height, width)
        elif shortest_edge_ok and "shortest_edge" in value and int(value["shortest_edge"]) > 0:
            return int(value["shortest_edge"])
    raise ValueError(f"unsupported image size {value!r}")


def _three_floats(value: object, name: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    if isinstance(value, list | tuple) and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ValueError(f"{name} must be a number or three numbers")
