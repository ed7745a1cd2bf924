"""Cloudflare Workers AI: ``POST {base}/accounts/{account_id}/ai/run/{model}``.

The body is the model's JSON input (``prompt``, ``seed``, and for models that take them
``width``/``height`` and ``image_b64``); the token travels as ``Authorization: Bearer``.
FLUX.1 [schnell] answers ``{"result": {"image": "<base64 JPEG>"}, "success": true}``, the
Stable Diffusion family answers with the image bytes themselves; both are handled. Errors
use the API's envelope ``{"success": false, "errors": [{"code", "message"}]}``. The request
id is the ``cf-ray`` response header.

A good fit for deployments that already keep their objects in Cloudflare R2: one account,
one bill. Step ``options``: ``input`` — a table merged into the model input as is (e.g.
``{ steps = 8 }`` for FLUX schnell, ``{ guidance = 7.5, negative_prompt = "..." }`` for SDXL).
Temperature does not apply to these diffusion models and is not sent.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from .base import (
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ProviderError,
    ProviderFailure,
    ProviderTimeout,
    RateLimited,
)
from .http import (
    HttpImageProvider,
    HttpReply,
    HttpTimeouts,
    ProviderHttpClient,
    check_option_keys,
    content_blocked,
    decode_base64_image,
    error_for_status,
    join_url,
    parse_retry_after,
    sniff_image_mime,
)

__all__ = ["DEFAULT_BASE_URL", "CloudflareProvider"]

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"

_INT32 = 2**31
# Workers AI internal error codes, from developers.cloudflare.com/workers-ai/platform/errors/
_RATE_LIMIT_CODES = frozenset({3036, 3040})  # daily free allocation used up; out of capacity
_TIMEOUT_CODES = frozenset({3007, 3008})
_AUTH_CODES = frozenset({10000, 9106, 9109})  # Cloudflare API authentication errors
# Workers AI documents no code for content refusals; its safety checkers answer in words.
_BLOCKED_RE = re.compile(r"nsfw|unsafe|content polic|safety|flagged|inappropriate", re.I)


@dataclass(frozen=True)
class _ModelFeatures:
    size: bool = True  # takes width/height
    image_input: bool = True  # takes image_b64 (img2img)


_FEATURES: dict[str, _ModelFeatures] = {
    "@cf/black-forest-labs/flux-1-schnell": _ModelFeatures(size=False, image_input=False),
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": _ModelFeatures(),
    "@cf/bytedance/stable-diffusion-xl-lightning": _ModelFeatures(),
    "@cf/lykon/dreamshaper-8-lcm": _ModelFeatures(),
    "@cf/runwayml/stable-diffusion-v1-5-img2img": _ModelFeatures(),
    "@cf/leonardo/lucid-origin": _ModelFeatures(image_input=False),
    "@cf/leonardo/phoenix-1.0": _ModelFeatures(image_input=False),
}


class CloudflareProvider(HttpImageProvider):
    name: ClassVar[str] = "cloudflare"
    label: ClassVar[str] = "Cloudflare Workers AI"
    MODELS: ClassVar[tuple[str, ...]] = tuple(_FEATURES)
    OPTIONS: ClassVar[tuple[str, ...]] = ("input",)
    key_setting: ClassVar[str] = "FLOWSTUDIO_CLOUDFLARE_API_TOKEN"
    account_setting: ClassVar[str] = "FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID"
    base_url_setting: ClassVar[str] = "FLOWSTUDIO_CLOUDFLARE_BASE_URL"

    def __init__(
        self,
        *,
        account_id: str | None,
        api_token: str | None,
        base_url: str = DEFAULT_BASE_URL,
        timeouts: HttpTimeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.account_id = (account_id or "").strip() or None
        self._api_token = api_token or None
        self.base_url = base_url.rstrip("/")
        self.http = ProviderHttpClient(
            label=self.label,
            timeouts=timeouts or HttpTimeouts(),
            secrets=(self._api_token,),
            base_url_setting=self.base_url_setting,
            transport=transport,
        )

    def missing_settings(self) -> tuple[str, ...]:
        missing = []
        if not self.account_id:
            missing.append(self.account_setting)
        if not self._api_token:
            missing.append(self.key_setting)
        return tuple(missing)

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        options = dict(request.options)
        check_option_keys(options, self.OPTIONS, self.label)
        overrides = options.get("input") or {}
        if not isinstance(overrides, dict):
            raise InvalidRequest("the Cloudflare option 'input' must be a table of model inputs.")
        if self.account_id is None or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.account_id):
            raise InvalidRequest(
                f"{self.account_setting} must be a Cloudflare account id (letters and digits)."
            )
        features = _FEATURES.get(request.model, _ModelFeatures())

        body: dict[str, Any] = {"prompt": request.prompt}
        seed = None
        if request.seed is not None:
            seed = request.seed % _INT32
            body["seed"] = seed
        if features.size:
            body["width"] = request.width
            body["height"] = request.height
        if request.input_images:
            if not features.image_input:
                raise InvalidRequest(
                    f"{request.model} only generates from text and cannot edit images; use an "
                    "img2img model (e.g. @cf/runwayml/stable-diffusion-v1-5-img2img) or another "
                    "provider for this edit step."
                )
            if len(request.input_images) > 1:
                raise InvalidRequest(
                    f"Workers AI image models take one input image; this step has "
                    f"{len(request.input_images)}. List a single input step, or use another "
                    "provider for multi-image edits."
                )
            body["image_b64"] = base64.b64encode(bytes(request.input_images[0].data)).decode()
        body.update(overrides)

        url = join_url(self.base_url, "accounts", self.account_id, "ai/run", request.model)
        reply = await self.http.send(
            "POST",
            url,
            auth_headers={"Authorization": f"Bearer {self._api_token}"},
            json_body=body,
        )
        request_id = reply.headers.get("cf-ray")
        if reply.ok and reply.content_type.startswith("image/"):
            image = reply.content
            if not image:
                raise ProviderFailure(
                    "Cloudflare Workers AI returned an empty image.",
                    provider_request_id=request_id,
                )
        else:
            payload = reply.json_or_none()
            if not reply.ok or (isinstance(payload, dict) and payload.get("success") is False):
                raise self._cloudflare_error(reply, payload, request_id)
            if not isinstance(payload, dict):
                raise self._malformed(
                    reply, "a response that is neither JSON nor an image", request_id
                )
            result = payload.get("result") if "result" in payload else payload
            value = result.get("image") if isinstance(result, dict) else None
            image = decode_base64_image(value, self.label, request_id)

        metadata: dict[str, Any] = {
            "seed": seed,
            "size_sent": f"{request.width}x{request.height}" if features.size else None,
            "requested_size": f"{request.width}x{request.height}",
            "input_overrides": sorted(overrides) or None,
            "ignored_settings": ["temperature"] if request.temperature is not None else None,
            "input_images": len(request.input_images) or None,
            "elapsed_ms": reply.elapsed_ms,
        }
        return GenerationResult(
            image=image,
            mime=sniff_image_mime(image) or reply.content_type or "image/jpeg",
            model=request.model,
            provider_request_id=request_id,
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    def _cloudflare_error(
        self, reply: HttpReply, payload: Any, request_id: str | None
    ) -> ProviderError:
        errors = payload.get("errors") if isinstance(payload, dict) else None
        codes: list[int] = []
        messages: list[str] = []
        for item in errors if isinstance(errors, list) else []:
            if isinstance(item, dict):
                if isinstance(item.get("code"), int):
                    codes.append(item["code"])
                if item.get("message"):
                    messages.append(str(item["message"]))
        detail = self.http.redact("; ".join(messages) if messages else reply.text_snippet())
        hint = f"error {', '.join(str(c) for c in codes)}" if codes else None
        retry_after = parse_retry_after(reply.headers)
        status = reply.status if not reply.ok else 500
        if set(codes) & _AUTH_CODES:
            return InvalidRequest(
                f"Cloudflare refused the API token (HTTP {reply.status}, {hint}); check "
                f"{self.key_setting} (it needs the Workers AI permission) and "
                f"{self.account_setting}.",
                provider_request_id=request_id,
            )
        if messages and _BLOCKED_RE.search(detail):
            return content_blocked(self.label, detail, request_id)
        if set(codes) & _RATE_LIMIT_CODES:
            return RateLimited(
                f"Cloudflare Workers AI is rate limiting this account (HTTP {reply.status}, "
                f"{hint}): {detail}",
                retry_after=retry_after,
                provider_request_id=request_id,
            )
        if set(codes) & _TIMEOUT_CODES:
            return ProviderTimeout(
                f"Cloudflare Workers AI timed out ({hint}): {detail}; try again.",
                retry_after=retry_after,
                provider_request_id=request_id,
            )
        return error_for_status(
            label=self.label,
            status=status,
            detail=detail,
            retry_after=retry_after,
            request_id=request_id,
            key_setting=self.key_setting,
            code_hint=hint,
        )
