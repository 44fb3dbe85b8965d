"""The plain httpx floor: one image the simplest honest way — POST, parse the JSON, base64-decode, write the file.

`fetch_one` is the warm-call floor (the benchmark times it in-process on a warm client); with `thumbnail` it is
the context floor, the least a server must do to show the model the image as well. Run as a script it is the
one-shot floor for the CLI figures (the whole process, interpreter start and imports included):

    python bench/floor_oneshot.py BASE_URL API_KEY OUTPUT_DIR
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import httpx

PAYLOAD = {"model": "black-forest-labs/flux.2-klein-4b",
           "messages": [{"role": "user", "content": "a fox, aspect ratio 1:1"}]}
#: The OpenAI-style images request (the fake's model), for the JPEG replies.
IMAGES_PAYLOAD = {"model": "bench/flux-klein", "prompt": "a fox, aspect ratio 1:1", "size": "1024x1024",
                  "response_format": "b64_json"}


def post(client: httpx.Client, base_url: str, key: str, output_format: str | None = None, n: int = 1) -> list[bytes]:
    """The images of one request: OpenRouter's chat completion, or (with `output_format`) the images API."""
    headers = {"Authorization": f"Bearer {key}"}
    if output_format is None:
        reply = client.post(f"{base_url}/chat/completions", json=PAYLOAD, headers=headers)
        reply.raise_for_status()
        url = reply.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
        return [base64.b64decode(url.split(",", 1)[1])]
    reply = client.post(f"{base_url}/images/generations", headers=headers,
                        json=images_payload(output_format, n))
    reply.raise_for_status()
    return [base64.b64decode(item["b64_json"]) for item in reply.json()["data"]]


def images_payload(output_format: str, n: int) -> dict[str, Any]:
    return {**IMAGES_PAYLOAD, "output_format": output_format, **({"n": n} if n > 1 else {})}


def fetch_one(client: httpx.Client, base_url: str, key: str, path: Path, thumbnail: bool = False,
              output_format: str | None = None) -> int:
    """One generation through `client`, saved to `path`; returns the image's byte size. With `thumbnail`, also
    the least a server must add to show the model the image: decode it once and make a 512 px JPEG (the
    context floor for the warm call, which no plain download pays). Pillow's `thumbnail` decodes a JPEG at the
    scale it needs by itself (draft mode): the floor gets what the server does by hand."""
    data = post(client, base_url, key, output_format)[0]
    path.write_bytes(data)
    if thumbnail:
        make_thumbnail(data)
    return len(data)


def make_thumbnail(data: bytes) -> bytes:
    from PIL import Image  # only here: the one-shot floor stays a plain httpx script

    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((512, 512), Image.Resampling.LANCZOS, reducing_gap=1.0)
        image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def main() -> None:
    base_url, key, folder = sys.argv[1:4]
    with httpx.Client(timeout=60) as client:
        fetch_one(client, base_url, key, Path(folder) / "oneshot.png")


if __name__ == "__main__":
    main()
