"""OpenAI Images: ``POST /images/generations`` and ``POST /images/edits`` (GPT image models).

Works against any OpenAI-compatible base URL. Requests carry ``Authorization: Bearer``;
images come back base64-encoded (``data[].b64_json``; a ``url`` is downloaded instead).
The request id is the ``x-request-id`` response header.

Step ``options`` (all optional): ``quality`` (low|medium|high|auto), ``background``
(transparent|opaque|auto), ``output_format`` (png|jpeg|webp), ``output_compression``
(0-100), ``moderation`` (auto|low), ``input_fidelity`` (high|low, edits), ``size`` (sent
as is, e.g. "auto"; otherwise the supported size closest to the step's size), ``user``,
and ``extra`` (a table merged into the request as is, for parameters added later).

GPT image models take neither a temperature nor a seed; the metadata says so.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .base import (
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ProviderError,
    ProviderFailure,
)
from .http import (
    HttpReply,
    KeyedHttpImageProvider,
    check_option_keys,
    closest_size,
    content_blocked,
    decode_base64_image,
    error_for_status,
    image_filename,
    input_mime,
    join_url,
    output_fetch_error,
    parse_retry_after,
    provider_detail,
    sniff_image_mime,
)

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_GPT_IMAGE_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_DALL_E_3_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))
_DALL_E_2_SIZES = ((256, 256), (512, 512), (1024, 1024))
# Error codes OpenAI uses when its safety system refuses a prompt, an input or an output.
_BLOCKED_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
MAX_INPUT_IMAGES = 16


class OpenAIProvider(KeyedHttpImageProvider):
    name: ClassVar[str] = "openai"
    label: ClassVar[str] = "OpenAI"
    MODELS: ClassVar[tuple[str, ...]] = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "quality",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "input_fidelity",
        "size",
        "user",
        "extra",
    )
    key_setting: ClassVar[str] = "FLOWSTUDIO_OPENAI_API_KEY"
    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL
    base_url_setting: ClassVar[str] = "FLOWSTUDIO_OPENAI_BASE_URL"

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        options = dict(request.options)
        check_option_keys(options, self.OPTIONS, self.label)
        extra = options.pop("extra", None) or {}
        if not isinstance(extra, dict):
            raise InvalidRequest("the OpenAI option 'extra' must be a table of request fields.")
        if len(request.input_images) > MAX_INPUT_IMAGES:
            raise InvalidRequest(f"OpenAI edits take at most {MAX_INPUT_IMAGES} input images.")

        requested_size = f"{request.width}x{request.height}"
        size = options.pop("size", None) or _size_for(request.model, request.width, request.height)
        fields: dict[str, Any] = {"model": request.model, "prompt": request.prompt, "n": 1}
        fields["size"] = size
        fields.update(options)
        if request.model.startswith("dall-e"):
            fields["response_format"] = "b64_json"  # GPT image models always answer in base64
        fields.update(extra)

        auth = {"Authorization": f"Bearer {self._api_key}"}
        if request.input_images:
            endpoint = "images/edits"
            field_name = "image[]" if len(request.input_images) > 1 else "image"
            files = []
            for index, image in enumerate(request.input_images):
                data = bytes(image.data)
                mime = input_mime(data, image.mime)
                files.append((field_name, (image_filename(index, mime), data, mime)))
            reply = await self.http.send(
                "POST",
                join_url(self.base_url, endpoint),
                auth_headers=auth,
                data={key: _form_value(value) for key, value in fields.items()},
                files=files,
            )
        else:
            endpoint = "images/generations"
            reply = await self.http.send(
                "POST", join_url(self.base_url, endpoint), auth_headers=auth, json_body=fields
            )

        request_id = reply.headers.get("x-request-id")
        if not reply.ok:
            raise self._openai_error(reply, request_id)
        payload = reply.json_or_none()
        if not isinstance(payload, dict):
            raise self._malformed(reply, "a response that is not JSON", request_id)
        items = payload.get("data")
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise ProviderFailure(
                f"OpenAI returned no image ({_describe(payload)}); try again or change the prompt.",
                provider_request_id=request_id,
            )
        item = items[0]
        if item.get("b64_json"):
            image = decode_base64_image(item["b64_json"], self.label, request_id)
        elif isinstance(item.get("url"), str):
            image = await self._download(item["url"], request_id)
        else:
            raise ProviderFailure(
                "OpenAI returned neither b64_json nor url for the image.",
                provider_request_id=request_id,
            )
        output_format = payload.get("output_format") or fields.get("output_format")
        # Bytes that are no image fail when the worker inspects them; the type is not guessed.
        mime = sniff_image_mime(image) or "application/octet-stream"

        ignored = [
            name
            for name, value in (("temperature", request.temperature), ("seed", request.seed))
            if value is not None
        ]
        metadata: dict[str, Any] = {
            "endpoint": endpoint,
            "size": payload.get("size") or size,
            "requested_size": requested_size,
            "quality": payload.get("quality") or fields.get("quality"),
            "background": payload.get("background") or fields.get("background"),
            "output_format": output_format,
            "revised_prompt": item.get("revised_prompt"),
            "usage": payload.get("usage"),
            "created": payload.get("created"),
            "input_images": len(request.input_images) or None,
            "ignored_settings": ignored or None,
            "elapsed_ms": reply.elapsed_ms,
        }
        return GenerationResult(
            image=image,
            mime=mime,
            model=request.model,
            provider_request_id=request_id,
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    def _openai_error(self, reply: HttpReply, request_id: str | None) -> ProviderError:
        payload = reply.json_or_none()
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            error = {}
        code = error.get("code") if isinstance(error.get("code"), str) else None
        kind = error.get("type") if isinstance(error.get("type"), str) else None
        detail = provider_detail(payload) if payload is not None else reply.text_snippet()
        detail = self.http.redact(detail)
        if code in _BLOCKED_CODES:
            return content_blocked(self.label, detail, request_id)
        if reply.status == 429 and code == "insufficient_quota":
            # Not a rate limit: waiting will not help until the account has credit again.
            return InvalidRequest(
                f"OpenAI says the account has no quota left (HTTP 429, insufficient_quota): "
                f"{detail} Check the plan and billing of {self.key_setting}'s account.",
                provider_request_id=request_id,
            )
        return error_for_status(
            label=self.label,
            status=reply.status,
            detail=detail,
            retry_after=parse_retry_after(reply.headers),
            request_id=request_id,
            key_setting=self.key_setting,
            code_hint=code or kind,
        )

    async def _download(self, url: str, request_id: str | None) -> bytes:
        # A URL answer (dall-e, some compatible servers) is fetched without our key.
        reply = await self.http.send("GET", url, follow_redirects=True)
        if not reply.ok:
            raise output_fetch_error(self.label, reply, request_id)
        return reply.content


def _size_for(model: str, width: int, height: int) -> str:
    if model.startswith(("gpt-image", "chatgpt-image")):
        sizes: tuple[tuple[int, int], ...] = _GPT_IMAGE_SIZES
    elif model.startswith("dall-e-3"):
        sizes = _DALL_E_3_SIZES
    elif model.startswith("dall-e-2"):
        sizes = _DALL_E_2_SIZES
    else:  # an OpenAI-compatible server with its own models: ask for what the step wants
        return f"{width}x{height}"
    w, h = closest_size(width, height, sizes)
    return f"{w}x{h}"


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _describe(payload: dict[str, Any]) -> str:
    keys = ", ".join(sorted(payload)[:8]) or "empty"
    return f"response fields: {keys}"
