"""Any other OpenAI-style images endpoint, configured entirely by environment variables."""

from __future__ import annotations

from ..config import Settings
from .base import Capabilities
from .openai_images import OpenAIImages


class OpenAICompatible(OpenAIImages):
    name = "openai-compatible"
    label = "the OpenAI-compatible endpoint"
    key_variable = "FLUX_KLEIN_API_KEY"
    base_url_variable = "FLUX_KLEIN_BASE_URL"
    billing_url = "the endpoint's billing page"
    sends_output_format = True  # OpenAI's images API documents it; an endpoint without it answers 400
    capabilities = Capabilities(edit=False, compose=False, seed=False, batch=4, formats=("png", "jpeg", "webp"))

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.model = settings.get("FLUX_KLEIN_MODEL")

    def missing(self) -> list[str]:
        wanted = (("FLUX_KLEIN_BASE_URL", self.base_url), ("FLUX_KLEIN_API_KEY", self._key),
                  ("FLUX_KLEIN_MODEL", self.model))
        return [name for name, value in wanted if not value]

    def _model_hint(self) -> str:
        return "Check FLUX_KLEIN_MODEL and FLUX_KLEIN_BASE_URL."
