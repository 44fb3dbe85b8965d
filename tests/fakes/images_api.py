"""Strict stand-ins for the OpenAI-style image gateways (PROVIDERS.md §2): one spec per provider.

Each refuses fields its page does not document, a wrong model, a bad key, and out-of-range values, in the
OpenAI error shape. EmpirioLabs answers with a job unless asked for `"sync": true` (or told to anyway).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .core import Answer, FakeBase, Fault, Incoming

SIZES = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}


@dataclass(frozen=True)
class Spec:
    name: str
    key_variable: str
    base_url_variable: str
    model: str
    #: Documented request fields besides model and prompt.
    fields: frozenset[str]
    key: str
    #: What a reply carries when no response_format is sent.
    default_reply: str = "url"
    extra_headers: dict[str, str] = field(default_factory=dict)
    accepts_x_api_key: bool = False


EMPIRIOLABS = Spec(
    "empiriolabs", "EMPIRIOLABS_API_KEY", "EMPIRIOLABS_BASE_URL", "flux-2-klein-4b",
    frozenset({"negative_prompt", "aspect_ratio", "size", "width", "height", "num_inference_steps", "guidance_scale",
               "seed", "num_images", "n", "format", "response_format", "images", "sync"}),
    key="el-" + "a1b2c3d4" * 5, accepts_x_api_key=True,
)
AIGATEWAY = Spec(
    "aigateway", "AIGATEWAY_API_KEY", "AIGATEWAY_BASE_URL", "black-forest-labs/flux-2-klein-4b",
    frozenset({"n", "size", "response_format"}), key="ag-" + "f00dfeed" * 5, extra_headers={"x-request-id": "req-ag"},
)
FLUXROUTER = Spec(
    "fluxrouter", "FLUX_API_KEY", "FLUXROUTER_BASE_URL", "flux-image", frozenset({"size"}),
    key="fx-" + "0badc0de" * 5, extra_headers={"X-Flux-Request-Id": "req-fx"},
)
# OpenAI's images API: `output_format` png|jpeg|webp (png when absent), as its reference documents it.
GENERIC = Spec(
    "openai-compatible", "FLUX_KLEIN_API_KEY", "FLUX_KLEIN_BASE_URL", "acme/flux-klein",
    frozenset({"n", "size", "response_format", "output_format"}), key="sk-" + "9e9e9e9e" * 5,
)
SPECS = {spec.name: spec for spec in (EMPIRIOLABS, AIGATEWAY, FLUXROUTER, GENERIC)}
NATIVE = {"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"}
#: Pillow's format and the MIME type for each way the APIs name a format (EmpirioLabs says jpg, OpenAI jpeg).
PILLOW = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg"),
          "webp": ("WEBP", "image/webp")}


def oai_error(status: int, message: str, code: str | None = None, kind: str = "invalid_request_error",
              param: str | None = None, headers: dict[str, str] | None = None) -> Answer:
    return Answer.json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers)


class FakeImagesAPI(FakeBase):
    def __init__(self, spec: Spec, cost_usd: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.cost_usd = cost_usd  # FluxRouter's X-Flux-Cost-Usd, when set
        self.public_url = "https://files.fake.test"  # where URL replies point; a Loopback sets its own address
        self.files: dict[str, bytes] = {}
        self.listed = [spec.model, "some-other-model"]  # what GET /models lists
        self.jobs: dict[str, dict[str, Any]] = {}
        self.force_jobs = False  # answer with a job even when "sync": true is sent
        self.job_polls = 2  # "processing" answers before a job completes
        self.job_outcome: dict[str, Any] | None = None  # e.g. {"status": "failed", "error": "..."}
        self.poll_script: deque[Answer] = deque()  # answers for the next job polls, before the job's own
        self._ids = itertools.count(1)

    def scripted_paths(self) -> tuple[str, ...]:
        return ("/images/generations",)

    @property
    def generations(self) -> list[Incoming]:
        return [r for r in self.requests if r.path.endswith("/images/generations")]

    def _authorised(self, incoming: Incoming) -> bool:
        if incoming.headers.get("authorization") == f"Bearer {self.spec.key}":
            return True
        return self.spec.accepts_x_api_key and incoming.headers.get("x-api-key") == self.spec.key

    def respond(self, incoming: Incoming) -> Answer | Fault:
        if incoming.method == "GET" and incoming.path.startswith("/v1/files/"):
            data = self.files.get(incoming.path.rsplit("/", 1)[1])  # signed URLs need no key
            mime = PILLOW.get(incoming.path.rsplit(".", 1)[-1], PILLOW["png"])[1]
            return Answer(200, data, {"Content-Type": mime}) if data else oai_error(404, "expired")
        if not self._authorised(incoming):
            return oai_error(401, "Incorrect API key provided", code="invalid_api_key", kind="authentication_error")
        if incoming.method == "GET" and incoming.path == "/v1/models":
            return Answer.json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.listed]})
        if incoming.method == "GET" and incoming.path.startswith("/v1/jobs/"):
            return self._job(incoming.path.rsplit("/", 1)[1])
        if incoming.method != "POST" or incoming.path != "/v1/images/generations":
            return oai_error(404, f"no route {incoming.method} {incoming.path}")
        try:
            body = incoming.json
        except ValueError:
            return oai_error(400, "could not parse the JSON body")
        problem = self.check(body)
        if problem is not None:
            return problem
        images = self.render(body)
        if self.spec.name == "empiriolabs" and (self.force_jobs or body.get("sync") is not True):
            job_id = f"job-{next(self._ids)}"
            self.jobs[job_id] = {"body": body, "images": images, "polls": 0}
            return Answer.json(202, {"job_id": job_id, "status": "queued"})
        return self.images_answer(body, images)

    def check(self, body: Any) -> Answer | None:
        spec = self.spec
        if not isinstance(body, dict):
            return oai_error(400, "body must be an object")
        for key in body:
            if key not in spec.fields | {"model", "prompt"}:
                return oai_error(400, f"Unrecognized request argument supplied: {key}", param=key)
        if body.get("model") != spec.model:
            return oai_error(404, f"The model {body.get('model')!r} does not exist", code="model_not_found")
        if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
            return oai_error(400, "prompt is required", param="prompt")
        count = body.get("num_images", body.get("n", 1))
        if not isinstance(count, int) or not 1 <= count <= 4:
            return oai_error(400, "n must be between 1 and 4", param="n")
        if "seed" in body and (not isinstance(body["seed"], int) or isinstance(body["seed"], bool)):
            return oai_error(400, "seed must be an integer", param="seed")
        if body.get("response_format", "url") not in ("url", "b64_json"):
            return oai_error(400, "response_format must be url or b64_json", param="response_format")
        if "size" in body and not re.fullmatch(r"\d+x\d+", str(body["size"])):
            return oai_error(400, "size must look like 1024x1024", param="size")
        if "output_format" in body and body["output_format"] not in ("png", "jpeg", "webp"):
            return oai_error(400, f"Invalid value: {body['output_format']!r}. Supported values are: 'png', 'jpeg', "
                             "and 'webp'.", code="invalid_value", param="output_format")
        if spec.name == "empiriolabs":
            return self._check_empirio(body)
        return None

    def _check_empirio(self, body: dict[str, Any]) -> Answer | None:
        if "aspect_ratio" in body and body["aspect_ratio"] not in NATIVE:
            return oai_error(400, f"aspect_ratio must be one of {sorted(NATIVE)}", param="aspect_ratio")
        if ("width" in body) != ("height" in body):
            return oai_error(400, "width and height go together", param="width")
        width, height = self.size(body)
        if not (256 <= width <= 2048 and 256 <= height <= 2048) or width * height > 1_048_576:
            return oai_error(400, "width and height must be 256-2048 and at most 1,048,576 pixels", param="width")
        if body.get("format", "webp") not in ("webp", "png", "jpg"):
            return oai_error(400, "format must be webp, png or jpg", param="format")
        images = body.get("images", [])
        if not isinstance(images, list) or len(images) > 4 or not all(
                isinstance(u, str) and (u.startswith("https://") or u.startswith("data:image/")) for u in images):
            return oai_error(400, "images must be up to 4 image URLs", param="images")
        return None

    def size(self, body: dict[str, Any]) -> tuple[int, int]:
        if "width" in body:
            return int(body["width"]), int(body["height"])
        if "size" in body:
            width, height = str(body["size"]).split("x")
            return int(width), int(height)
        return SIZES[body.get("aspect_ratio", "1:1")]

    def format_of(self, body: dict[str, Any]) -> str:
        """The format the API answers in: EmpirioLabs' `format` (WebP when absent, as documented), OpenAI's
        `output_format` (PNG when absent); the other gateways document none and send PNG."""
        if self.spec.name == "empiriolabs":
            return str(body.get("format", "webp"))
        return str(body.get("output_format", "png"))

    def render(self, body: dict[str, Any]) -> list[bytes]:
        width, height = self.size(body)
        fmt = PILLOW[self.format_of(body)][0]
        out = []
        for i in range(body.get("num_images", body.get("n", 1))):
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (30 + 40 * i, 90, 160)).save(buffer, fmt)
            out.append(buffer.getvalue())
        return out

    def images_answer(self, body: dict[str, Any], images: list[bytes]) -> Answer:
        wanted = body.get("response_format", self.spec.default_reply)
        data = []
        for image in images:
            if wanted == "b64_json":
                data.append({"b64_json": base64.b64encode(image).decode(), "revised_prompt": body["prompt"]})
            else:
                name = f"img-{next(self._ids)}.{self.format_of(body)}"
                self.files[name] = image
                data.append({"url": f"{self.public_url}/v1/files/{name}"})
        headers = dict(self.spec.extra_headers)
        if self.cost_usd is not None:
            headers["X-Flux-Cost-Usd"] = self.cost_usd
        return Answer.json(200, {"created": 1776947082, "data": data}, headers)

    def _job(self, job_id: str) -> Answer:
        if self.poll_script:
            return self.poll_script.popleft()
        job = self.jobs.get(job_id)
        if job is None:
            return oai_error(404, "job not found")
        job["polls"] += 1
        if job["polls"] <= self.job_polls:
            return Answer.json(200, {"job_id": job_id, "status": "processing", "progress": job["polls"] / 4})
        if self.job_outcome is not None:
            return Answer.json(200, {"job_id": job_id, **self.job_outcome})
        result = self.images_answer(job["body"], job["images"])
        return Answer.json(200, {"job_id": job_id, "status": "completed", "progress": 1.0,
                                 "result": json.loads(result.body)})
