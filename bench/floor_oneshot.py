"""The plain httpx floor: one image the simplest honest way — POST, parse the JSON, base64-decode, write the file.

`fetch_one` is the warm-call floor (the benchmark times it in-process on a warm client); run as a script it is
the one-shot floor for the CLI figures (the whole process, interpreter start and imports included):

    python bench/floor_oneshot.py BASE_URL API_KEY OUTPUT_DIR
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import httpx

PAYLOAD = {"model": "black-forest-labs/flux.2-klein-4b",
           "messages": [{"role": "user", "content": "a fox, aspect ratio 1:1"}]}


def fetch_one(client: httpx.Client, base_url: str, key: str, path: Path, thumbnail: bool = False) -> int:
    """One generation through `client`, saved to `path`; returns the image's byte size. With `thumbnail`, also
    the least a server must add to show the model the image: decode it once and make a 512 px JPEG (the
    context floor for the warm call, which no plain download pays)."""
    reply = client.post(f"{base_url}/chat/completions", json=PAYLOAD, headers={"Authorization": f"Bearer {key}"})
    reply.raise_for_status()
    url = reply.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
    data = base64.b64decode(url.split(",", 1)[1])
    path.write_bytes(data)
    if thumbnail:
        from PIL import Image  # only here: the one-shot floor stays a plain httpx script

        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((512, 512), Image.Resampling.LANCZOS, reducing_gap=1.0)
            image.convert("RGB").save(io.BytesIO(), "JPEG", quality=80)
    return len(data)


def main() -> None:
    base_url, key, folder = sys.argv[1:4]
    with httpx.Client(timeout=60) as client:
        fetch_one(client, base_url, key, Path(folder) / "oneshot.png")


if __name__ == "__main__":
    main()
