"""AIGateway: FLUX.2 klein behind one key, through the OpenAI-style images API (PROVIDERS.md §2)."""

from __future__ import annotations

from .base import Capabilities
from .openai_images import OpenAIImages


class AIGateway(OpenAIImages):
    name = "aigateway"
    label = "AIGateway"
    key_variable = "AIGATEWAY_API_KEY"
    base_url_variable = "AIGATEWAY_BASE_URL"
    default_base_url = "https://api.aigateway.sh/v1"
    model_id = "black-forest-labs/flux-2-klein-4b"
    billing_url = "your AIGateway dashboard (https://aigateway.sh)"
    # Documented fields: prompt, n, size, response_format. No seed, no reference images.
    capabilities = Capabilities(edit=False, compose=False, seed=False, batch=4)
