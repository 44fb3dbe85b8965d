"""A fast fake provider on loopback for the benchmark: OpenRouter's chat completions (PROVIDERS.md §1) and an
OpenAI-style images endpoint (§2, with OpenAI's `output_format`), the one a JPEG reply comes from.

Unlike the strict fakes in tests/, this one is built for speed and honest concurrency: every success body is
rendered once (a textured picture, like a real answer rather than a flat colour: a 1024x1024 PNG of a few hundred
KB, the same at 2048x2048 under the path prefix `/px2048`, and the 1024x1024 one as a JPEG of quality 90), each
connection gets its own thread, the artificial latency is a `time.sleep` in that thread, and the listen backlog
takes hundreds of connections at once. It still refuses a wrong key, a wrong model or a body that is not what the
API takes, so a misconfigured run fails loudly instead of measuring error paths.

Run it as a script and it prints one JSON line (`url`, `image_bytes`, `body_bytes`) and serves until its stdin
closes, so it never outlives the benchmark that started it:

    python bench/fake_provider.py --latency 1
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageChops

BENCH_KEY = "sk-or-v1-" + "be4c" * 16
IMAGE_PX = 1024
COMPLETIONS = "/api/v1/chat/completions"
#: The same fake with the 2048x2048 picture: a base URL with this prefix.
LARGE = "/px2048"
IMAGES = "/v1/images/generations"
#: The model an openai-compatible server is pointed at (FLUX_KLEIN_MODEL).
IMAGES_MODEL = "bench/flux-klein"
JPEG_QUALITY = 90
KEY_INFO = {"data": {"label": "sk-or-v1-be4...e4c", "limit": None, "limit_remaining": None, "usage": 0.0,
                     "is_free_tier": False}}


def textured_png(size: int = IMAGE_PX, seed: int = 1) -> bytes:
    """A deterministic picture PNG compresses like a photo-ish render: crossed gradients under soft colour blobs."""
    rng = random.Random(seed)
    gradient = Image.linear_gradient("L").resize((size, size))
    cells = 16
    blobs = Image.frombytes("L", (cells, cells), rng.randbytes(cells * cells)).point(lambda v: v // 3)
    blobs = blobs.resize((size, size), Image.Resampling.BICUBIC)
    channels = [
        ImageChops.add(gradient, blobs),
        ImageChops.add(gradient.rotate(90), blobs.rotate(90)),
        ImageChops.add(gradient.rotate(45, resample=Image.Resampling.BILINEAR),
                       blobs.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    ]
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "PNG")
    return out.getvalue()


def flat_png(size: int = IMAGE_PX) -> bytes:
    """A one-colour PNG of the same size: what the test suite's fakes send (and the issue's baseline figures used)."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


PICTURES = {"flat": flat_png, "textured": textured_png}


def as_jpeg(png: bytes, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


class FakeOpenRouter:
    """What the fake answers; thread-safe. `peak_in_flight` is the most completions open at once since last read."""

    def __init__(self, latency_s: float, key: str = BENCH_KEY, image: bytes | None = None,
                 large: bytes | None = None) -> None:
        self.latency_s = latency_s
        self.key = key
        self.image = image if image is not None else textured_png()
        self.large = large if large is not None else self.image
        self.jpeg = as_jpeg(self.image)
        self._tail = self._completion(self.image)
        self._large_tail = self._completion(self.large)
        self._images: dict[tuple[str, int], bytes] = {}  # (format, n) -> body, made on first use
        self._lock = threading.Lock()
        self._generation = 0
        self._in_flight = 0
        self.completions = 0
        self.peak_in_flight = 0

    @staticmethod
    def _completion(image: bytes) -> bytes:
        """A chat completion carrying `image`, without its first `{`: each answer splices its own id in front."""
        body = {
            "object": "chat.completion",
            "created": 1763000000,
            "model": "black-forest-labs/flux.2-klein-4b",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "",
                "images": [{"type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}}],
            }}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4175, "total_tokens": 4187, "cost": 0.014},
        }
        return json.dumps(body, separators=(",", ":")).encode()[1:]

    def images_body(self, fmt: str, n: int) -> bytes:
        """An images API answer of `n` copies of the picture in `fmt` (png or jpeg)."""
        with self._lock:
            if (fmt, n) not in self._images:
                data = base64.b64encode(self.jpeg if fmt == "jpeg" else self.image).decode()
                self._images[fmt, n] = json.dumps({"created": 1776947082, "data": [{"b64_json": data}] * n},
                                                  separators=(",", ":")).encode()
            return self._images[fmt, n]

    @property
    def body_bytes(self) -> int:
        return len(self._tail) + 20

    def stats(self) -> dict[str, int]:
        with self._lock:
            stats = {"completions": self.completions, "peak_in_flight": self.peak_in_flight}
            self.peak_in_flight = self._in_flight
        return stats

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        """(status, JSON body, generation id or "") for one request."""
        if path == "/bench/stats":
            return 200, json.dumps(self.stats()).encode(), ""
        if headers.get("authorization") != f"Bearer {self.key}":
            return _error(401, "User not found.")
        if method == "GET" and path == "/api/v1/key":
            return 200, json.dumps(KEY_INFO).encode(), ""
        large = path.startswith(LARGE + "/")
        path = path.removeprefix(LARGE) if large else path
        if method == "POST" and path == IMAGES:
            return self._images_answer(body)
        if method != "POST" or path != COMPLETIONS:
            return _error(404, f"Not found: {method} {path}")
        problem = _check(body)
        if problem:
            return _error(400, problem)
        generation = self._enter()
        try:
            self._wait()
        finally:
            self._leave()
        return 200, b'{"id":"' + generation.encode() + b'",' + (self._large_tail if large else self._tail), generation

    def _images_answer(self, body: bytes) -> tuple[int, bytes, str]:
        try:
            payload: Any = json.loads(body)
        except ValueError:
            return _error(400, "Invalid JSON body")
        problem = _check_images(payload)
        if problem:
            return _error(400, problem)
        self._enter()
        try:
            self._wait()
        finally:
            self._leave()
        return 200, self.images_body(payload.get("output_format", "png"), payload.get("n", 1)), ""

    def _enter(self) -> str:
        with self._lock:
            self._generation += 1
            generation = f"gen-bench-{self._generation}"
            self.completions += 1
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return generation

    def _wait(self) -> None:
        if self.latency_s > 0:
            time.sleep(self.latency_s)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _check(body: bytes) -> str | None:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return "Invalid JSON body"
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
        return "fake: the body must be a JSON object with a model"
    messages = payload.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        return "fake: expected exactly one message"
    if "modalities" in payload or "max_tokens" in payload:
        return "fake: FLUX takes no modalities or max_tokens"
    return None


def _check_images(payload: Any) -> str | None:
    if not isinstance(payload, dict) or payload.get("model") != IMAGES_MODEL:
        return f"fake: the body must be a JSON object for the model {IMAGES_MODEL}"
    unknown = set(payload) - {"model", "prompt", "n", "size", "response_format", "output_format"}
    if unknown:
        return f"Unrecognized request argument supplied: {sorted(unknown)[0]}"
    if payload.get("response_format") != "b64_json" or payload.get("output_format", "png") not in ("png", "jpeg"):
        return "fake: b64_json replies in png or jpeg only"
    if payload.get("n", 1) not in (1, 2, 3, 4):
        return "n must be between 1 and 4"
    return None


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": {"code": status, "message": message}}).encode(), ""


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # the default backlog of 5 resets connections when dozens arrive at once
    daemon_threads = True


def _handler_for(fake: FakeOpenRouter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in one write, and nothing waits on a delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload, generation = fake.answer(self.command, self.path.split("?")[0], headers, body)
            head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
                    "Content-Type: application/json", f"Content-Length: {len(payload)}"]
            if generation:
                head.append(f"X-Generation-Id: {generation}")
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

        do_GET = do_POST = _serve

    return Handler


class Loopback:
    """Serves a fake on 127.0.0.1 (a free port unless given) in a daemon thread until `close()`."""

    def __init__(self, fake: FakeOpenRouter, port: int = 0) -> None:
        self.fake = fake
        self._server = _Server(("127.0.0.1", port), _handler_for(fake))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each completion waits (default 0)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--key", default=BENCH_KEY, help="the only API key accepted")
    parser.add_argument("--image", choices=PICTURES, default="textured", help="the picture every answer carries")
    args = parser.parse_args(argv)
    picture = PICTURES[args.image]
    fake = FakeOpenRouter(args.latency, args.key, picture(IMAGE_PX), picture(2 * IMAGE_PX))
    server = Loopback(fake, args.port)
    print(json.dumps({"url": server.url, "image_bytes": len(fake.image), "body_bytes": fake.body_bytes,
                      "large_bytes": len(fake.large), "jpeg_bytes": len(fake.jpeg)}), flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin (or dies)
    except KeyboardInterrupt:
        pass
    server.close()


if __name__ == "__main__":
    main()
