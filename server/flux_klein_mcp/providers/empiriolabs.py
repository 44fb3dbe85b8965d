"""EmpirioLabs: FLUX.2 klein at $0.0085 an image, asynchronous by default (PROVIDERS.md §2).

We ask for the images directly (`"sync": true`), and still follow a job reply (`job_id`) when one comes back:
`GET {base}/jobs/{job_id}` until it completes or fails, reporting progress, within FLUX_KLEIN_TIMEOUT_S.
"""

from __future__ import annotations

import math
import re
from typing import Any

import anyio

from .. import pricing
from ..errors import BadReply, ConnectionFailed, ContentRefused, ProviderError, RateLimited, ServerFailed
from ..request import ImageRequest
from ..rules import AspectRatio
from . import http as wire
from .base import Call, Capabilities, Link, Reply
from .openai_images import OpenAIImages, count_of, size_for

#: The aspect ratios EmpirioLabs takes by name; the others are sent as width and height (within 1 MP).
NATIVE_ASPECT_RATIOS: frozenset[AspectRatio] = frozenset({"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"})
# Job status names are unverified beyond "completed" and "failed": accept the usual synonyms.
DONE = frozenset({"completed", "complete", "succeeded", "success", "done", "finished"})
FAILED = frozenset({"failed", "error", "errored", "cancelled", "canceled", "expired", "rejected"})
RUNNING = frozenset({"queued", "pending", "waiting", "starting", "processing", "running", "in_progress"})
_JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: Its `format` field's name for each output format (webp|png|jpg).
FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
POLL_FIRST_S = 0.5
POLL_MAX_S = 3.0


class EmpirioLabs(OpenAIImages):
    name = "empiriolabs"
    label = "EmpirioLabs"
    key_variable = "EMPIRIOLABS_API_KEY"
    base_url_variable = "EMPIRIOLABS_BASE_URL"
    default_base_url = "https://api.empiriolabs.ai/v1"
    model_id = "flux-2-klein-4b"
    billing_url = "your EmpirioLabs dashboard (https://empiriolabs.ai)"
    sends_seed = True
    capabilities = Capabilities(edit=True, compose=True, seed=True, batch=4, formats=("png", "jpeg", "webp"))

    def payload(self, call: Call) -> dict[str, Any]:
        req: ImageRequest = call.request
        body = super().payload(call)
        body.pop("size", None)
        if body.pop("n", None):
            body["num_images"] = call.count
        if req.aspect_ratio in NATIVE_ASPECT_RATIOS:
            body["aspect_ratio"] = req.aspect_ratio
        elif req.aspect_ratio is not None:
            body["width"], body["height"] = size_for(req.aspect_ratio)
        if req.inputs:
            body["images"] = [image.url for image in req.inputs]
        body["format"] = FORMATS[req.output_format]  # (always sent: its own default is WebP)
        body["sync"] = True
        return body

    async def reply_from(self, body: Any, payload: dict[str, Any], link: Link, headers: Any = None,
                         decoded: dict[int, bytes] | None = None) -> Reply:
        if isinstance(body, dict) and body.get("job_id") and not body.get("data"):
            job_id = str(body["job_id"])
            if not _JOB_ID.fullmatch(job_id):  # it goes into a URL path and into messages: nothing odd passes
                raise BadReply("EmpirioLabs answered with a job id that is not a plain name; it was not followed. It "
                               "may still finish and be charged; nothing was saved.", provider=self.label, status=202)
            body, decoded = await self._wait_for_job(job_id, link, count_of(payload)), None
        return await super().reply_from(body, payload, link, headers, decoded)

    async def _wait_for_job(self, job_id: str, link: Link, count: int) -> Any:
        """Poll the job until it is done; its `result` is an images response (or the list of its items)."""
        delay = POLL_FIRST_S
        try:
            with anyio.fail_after(self._timeout_s):
                while True:
                    job = await self._poll(job_id, link)
                    if job is not None:
                        status = str(job.get("status", "")).lower()
                        if status in DONE:
                            result = job.get("result")
                            return {"data": result} if isinstance(result, list) else result
                        if status in FAILED:
                            raise self._job_failed(job_id, job)
                        progress = job.get("progress")
                        fraction = _fraction(progress)
                        word = status if status in RUNNING else "running"  # never the provider's own text
                        await link.progress(fraction, f"EmpirioLabs job {word if status else 'queued'}")
                    await link.sleep(delay)
                    delay = min(delay * 2, POLL_MAX_S)
        except TimeoutError:
            failure = ConnectionFailed(
                f"EmpirioLabs job {job_id} did not finish within {self._timeout_s:g} s (FLUX_KLEIN_TIMEOUT_S). "
                "Nothing was saved; it may still finish and be charged. Try again later or raise the timeout.",
                provider=self.label,
            )
            # It may still be billed: counted against the budgets at the list price, for every image it asked for.
            per_image, _ = pricing.worst_case(self.name, self.model)
            failure.charged = (per_image, count, "price list")
            raise failure from None

    async def _poll(self, job_id: str, link: Link) -> dict[str, Any] | None:
        """One look at the job; None after a passing fault (rate limit, 500/503, a dropped connection).

        Those are waited out here: letting them reach the retry policy would repeat the whole call and pay for
        a second job.
        """
        try:
            reply = await wire.send(link.http, "GET", f"{self.base_url}/jobs/{job_id}", provider=self.label,
                                    timeout_s=self._timeout_s, headers=self.headers(),
                                    gate=link.gate)
        except ConnectionFailed:
            return None
        if reply.status != 200:
            error = self.error_for(reply)
            if isinstance(error, RateLimited) or (isinstance(error, ServerFailed) and error.retryable):
                return None
            raise error
        job = await link.work(reply.json, self.label)  # (a finished job carries its images: megabytes of JSON)
        if not isinstance(job, dict):
            raise BadReply(f"EmpirioLabs answered the job {job_id} check with something that is not a job. It may "
                           "still finish and be charged; nothing was saved.", provider=self.label, status=200)
        return job

    def _job_failed(self, job_id: str, job: dict[str, Any]) -> ProviderError:
        error = job.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        text = wire.clip(str(detail or "no details")[:6000])
        if any(word in text.lower() for word in ("nsfw", "moderation", "safety", "content policy", "flagged")):
            return ContentRefused(f"EmpirioLabs refused the request: {text}. Rephrase it without the flagged "
                                  "content.", provider=self.label)
        return BadReply(f"EmpirioLabs job {job_id} failed: {text}. Nothing was saved; try again.",
                        provider=self.label, status=200)


def _fraction(progress: Any) -> float:
    """A job's progress as a fraction below 1 (anything else, huge or not finite, is no progress)."""
    try:
        value = float(progress) if isinstance(progress, int | float) and not isinstance(progress, bool) else 0.0
    except OverflowError:
        return 0.0
    return min(max(value, 0.0), 0.99) if math.isfinite(value) else 0.0
