"""Turn the `data` of an image request (http(s) URL, data URL or base64) into a decoded RGB image, safely.

URLs are fetched by :mod:`inference.engine.fetch`, which refuses private addresses (SSRF guard). Decoding is
bounded as well: only common raster formats are accepted, and the pixel count of an image is checked from its
header before its pixels are decoded (a few-kilobyte PNG can claim 20000x20000 pixels).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import re
import threading
import warnings
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from PIL import Image, UnidentifiedImageError

from .fetch import FetchGate, FetchPolicy, fetch_url
from .types import EmbedRequest, ImageFetchError, InputType, InvalidInput

__all__ = ["ALLOWED_FORMATS", "FetchPolicy", "decode_image", "load_image"]

# Formats Pillow may open. Deliberately short: Pillow also reads formats such as EPS (which runs Ghostscript)
# and many rarely used, rarely audited decoders that an embedding API has no need to expose.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# A URI scheme: base64 never contains ':', so any string that starts like this is a URL, not image data.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_WARNINGS_LOCK = threading.Lock()


def load_image(data: object, policy: FetchPolicy) -> Image.Image:
    """Load the image described by a request's `data` and return it decoded, in RGB.

    `data` may be an http(s) URL (fetched under `policy`), a data URL (`data:image/png;base64,...`) or bare
    base64. Raises :class:`ImageFetchError` when a URL cannot be fetched safely and :class:`InvalidInput`
    for anything else that is not a usable image. Messages never contain the inline image data.
    """
    if not isinstance(data, str):
        raise InvalidInput(
            "Image input must be a string (an http(s) URL, a data URL or base64 data), "
            f"not {_json_type(data)}."
        )
    text = data.strip()
    if not text:
        raise InvalidInput("Image input is empty.")
    match = _SCHEME_RE.match(text)
    if match is None:
        return decode_image(_decode_base64(text, policy), policy, source="Image data")
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        raw = fetch_url(text, policy)
        return decode_image(raw, policy, source="The image at the URL", error=ImageFetchError)
    if scheme == "data":
        return decode_image(_decode_data_url(text, policy), policy, source="The data URL")
    raise InvalidInput(
        f"Unsupported image URL scheme {scheme[:20]!r}: use an http(s) URL, a data URL or base64 data."
    )


def decode_image(
    raw: bytes, policy: FetchPolicy, *, source: str = "Image data", error: type[InvalidInput] = InvalidInput
) -> Image.Image:
    """Decode encoded image bytes into an RGB image, refusing bombs and anything that is not an image.

    `source` starts the error messages ("Image data is not a valid image ..."); `error` is the exception class
    raised, so failures of a URL fetch can stay :class:`ImageFetchError`.
    """
    try:
        # Pillow only *warns* about images above its own limit; make that an error too. Our own, usually
        # lower, limit is checked right after, still before any pixel is decoded. `catch_warnings` swaps
        # process-wide state, so concurrent decodes (the runner fetches in threads) take turns; opening
        # reads only the header, so the lock is held briefly.
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise error(f"{source} has too many pixels (the limit is {policy.max_pixels}).") from exc
    except UnidentifiedImageError as exc:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise error(f"{source} is not a valid image (supported formats: {allowed}).") from exc
    except Exception as exc:  # a corrupt header can make any plugin raise anything
        raise error(f"{source} is not a valid image: the image header is corrupt.") from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        raise error(f"{source} is not a valid image: it has no pixels.")
    if width * height > policy.max_pixels:
        raise error(
            f"{source} has too many pixels: {width}x{height} is more than the limit of {policy.max_pixels}."
        )
    if max(width, height) > policy.max_edge:
        raise error(
            f"{source} is too large: {width}x{height} has a side longer than {policy.max_edge} pixels."
        )
    try:
        # Decode every pixel now: a truncated or corrupt body must fail here, as the caller's error, and not
        # later inside preprocessing.
        image.load()
        rgb = image.convert("RGB")
    except Exception as exc:
        raise error(f"{source} is not a valid image: it is truncated or corrupt.") from exc
    return rgb


def _decode_base64(text: str, policy: FetchPolicy, *, what: str = "Image data") -> bytes:
    """Decode standard or URL-safe base64, with or without padding or line breaks, up to max_bytes."""
    compact = "".join(text.split())  # JSON payloads are often wrapped at 76 columns
    # 4 characters carry 3 bytes: refuse an oversized payload before allocating its decoded form.
    if (len(compact) // 4) * 3 > policy.max_bytes + 3:
        raise InvalidInput(f"Image is larger than {policy.max_bytes} bytes.")
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            f"{what} is not valid base64 (image input must be an http(s) URL, a data URL or base64 data)."
        ) from exc
    if not raw:
        raise InvalidInput(f"{what} is empty.")
    if len(raw) > policy.max_bytes:
        raise InvalidInput(f"Image is larger than {policy.max_bytes} bytes.")
    return raw


def _decode_data_url(text: str, policy: FetchPolicy) -> bytes:
    """Decode `data:[<media type>][;base64],<data>` (RFC 2397)."""
    header, comma, payload = text.partition(",")
    if not comma:
        raise InvalidInput("The data URL is malformed: it has no ',' before the data.")
    params = [p.strip().lower() for p in header[len("data:") :].split(";")]
    media_type = params[0]
    if media_type and not media_type.startswith("image/") and media_type != "application/octet-stream":
        raise InvalidInput(f"The data URL has media type {media_type[:50]!r}, which is not an image type.")
    if params[-1] == "base64":
        return _decode_base64(payload, policy, what="The data URL")
    if len(payload) > 3 * policy.max_bytes:  # percent-encoding at most triples the size
        raise InvalidInput(f"Image is larger than {policy.max_bytes} bytes.")
    raw = unquote_to_bytes(payload)
    if len(raw) > policy.max_bytes:
        raise InvalidInput(f"Image is larger than {policy.max_bytes} bytes.")
    return raw


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def prefetch_urls(
    requests: Sequence[EmbedRequest], gate: FetchGate, policy: FetchPolicy
) -> list[EmbedRequest]:
    """The requests with every image URL fetched through `gate` and put inline (as a data URL).

    Called by the web process before the requests reach the ONNX workers, so that no worker ever waits on
    the network: a slow image server holds one of the gate's slots, never a model.
    """
    positions = [
        i
        for i, request in enumerate(requests)
        if request.input_type == InputType.IMAGE
        and isinstance(request.data, str)
        and request.data.strip().lower().startswith(("http://", "https://"))
    ]
    if not positions:
        return list(requests)
    bodies = gate.fetch_all([str(requests[i].data).strip() for i in positions], policy)
    fetched = list(requests)
    for i, body in zip(positions, bodies, strict=True):
        inline = "data:application/octet-stream;base64," + base64.b64encode(body).decode("ascii")
        fetched[i] = dataclasses.replace(requests[i], data=inline)
    return fetched
