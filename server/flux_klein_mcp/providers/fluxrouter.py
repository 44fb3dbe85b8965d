"""FluxRouter: the `flux-image` alias through the OpenAI-style images API (PROVIDERS.md §2).

Its page documents only `model` and `prompt` for sure ("n and size only where accepted"), so each image is its
own request; the charge comes from the `X-Flux-Cost-Usd` header when present.
"""

from __future__ import annotations

from .base import Capabilities
from .openai_images import OpenAIImages


class FluxRouter(OpenAIImages):
    name = "fluxrouter"
    label = "FluxRouter"
    key_variable = "FLUX_API_KEY"
    base_url_variable = "FLUXROUTER_BASE_URL"
    default_base_url = "https://api.fluxrouter.ai/v1"
    model_id = "flux-image"
    billing_url = "your FluxRouter dashboard (https://fluxrouter.ai)"
    sends_response_format = False
    cost_header = "x-flux-cost-usd"
    capabilities = Capabilities(edit=False, compose=False, seed=False, batch=1)
