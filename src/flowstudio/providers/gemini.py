"""Google Gemini image generation: ``POST {base}/models/{model}:generateContent``.

The prompt is a text part, input images are ``inlineData`` parts; the image comes back as an
``inlineData`` part of the first candidate. ``generationConfig`` carries the temperature,
the seed (int32), ``responseModalities`` and ``imageConfig.aspectRatio`` (the supported
ratio closest to the step's size). The key travels in the ``x-goog-api-key`` header.
The response's ``responseId`` is the request id and ``modelVersion`` the model version.

Safety: a ``promptFeedback.blockReason`` or a safety ``finishReason`` with no image is a
``content_blocked`` error.

Step ``options`` (all optional): ``aspect_ratio`` (e.g. "16:9"; "" leaves it to the model),
``image_size`` ("1K"|"2K"|"4K", models that support it), ``response_modalities``
(default ["TEXT", "IMAGE"]), ``safety_settings`` (the API's ``safetySettings`` list),
``system_instruction`` (text) and ``extra`` (merged into ``generationConfig`` as is).
"""

from __future__ import annotations

import base64
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
    closest_aspect_ratio,
    content_blocked,
    decode_base64_image,
    error_for_status,
    input_mime,
    join_url,
    parse_duration,
    parse_retry_after,
    sniff_image_mime,
)

__all__ = ["DEFAULT_BASE_URL", "GeminiProvider"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# finishReason values that mean "refused on policy grounds" rather than "failed".
_BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_INT32 = 2**31
MAX_TEXT_CHARS = 2000


class GeminiProvider(KeyedHttpImageProvider):
    name: ClassVar[str] = "gemini"
    label: ClassVar[str] = "Gemini"
    MODELS: ClassVar[tuple[str, ...]] = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "aspect_ratio",
        "image_size",
        "response_modalities",
        "safety_settings",
        "system_instruction",
        "extra",
    )
    key_setting: ClassVar[str] = "FLOWSTUDIO_GEMINI_API_KEY"
    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL
    base_url_setting: ClassVar[str] = "FLOWSTUDIO_GEMINI_BASE_URL"

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        options = dict(request.options)
        check_option_keys(options, self.OPTIONS, self.label)
        extra = options.get("extra") or {}
        if not isinstance(extra, dict):
            raise InvalidRequest("the Gemini option 'extra' must be a table.")
        model = request.model.removeprefix("models/")

        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        for image in request.input_images:
            data = bytes(image.data)
            parts.append(
                {
                    "inlineData": {
                        "mimeType": input_mime(data, image.mime),
                        "data": base64.b64encode(data).decode("ascii"),
                    }
                }
            )

        config: dict[str, Any] = {
            "responseModalities": options.get("response_modalities") or ["TEXT", "IMAGE"]
        }
        if request.temperature is not None:
            config["temperature"] = request.temperature
        seed = None
        if request.seed is not None:
            seed = request.seed % _INT32  # the API's seed is an int32
            config["seed"] = seed
        aspect = options.get(
            "aspect_ratio", closest_aspect_ratio(request.width, request.height, ASPECT_RATIOS)
        )
        image_config: dict[str, Any] = {}
        if aspect:
            image_config["aspectRatio"] = aspect
        if options.get("image_size"):
            image_config["imageSize"] = options["image_size"]
        # Gemini 2.0's experimental image model predates imageConfig and rejects it.
        if image_config and "gemini-2.0" not in model:
            config["imageConfig"] = image_config
        config.update(extra)

        body: dict[str, Any] = {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": config,
        }
        if options.get("safety_settings"):
            body["safetySettings"] = options["safety_settings"]
        if options.get("system_instruction"):
            body["systemInstruction"] = {"parts": [{"text": str(options["system_instruction"])}]}

        reply = await self.http.send(
            "POST",
            join_url(self.base_url, f"models/{model}:generateContent"),
            auth_headers={"x-goog-api-key": self._api_key or ""},
            json_body=body,
        )
        if not reply.ok:
            raise self._gemini_error(reply)
        payload = reply.json_or_none()
        if not isinstance(payload, dict):
            raise self._malformed(reply, "a response that is not JSON", None)
        response_id = (
            payload.get("responseId") if isinstance(payload.get("responseId"), str) else None
        )

        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            reason = str(feedback["blockReason"])
            message = feedback.get("blockReasonMessage") or ""
            raise content_blocked(
                self.label, f"the prompt was blocked ({reason}) {message}".strip(), response_id
            )
        candidates = payload.get("candidates")
        if (
            not isinstance(candidates, list)
            or not candidates
            or not isinstance(candidates[0], dict)
        ):
            raise ProviderFailure(
                "Gemini returned no candidates; try again or rephrase the prompt.",
                provider_request_id=response_id,
            )
        candidate = candidates[0]
        finish = candidate.get("finishReason")
        content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
        raw_parts = content.get("parts") if isinstance(content.get("parts"), list) else []
        texts: list[str] = []
        inline: dict[str, Any] | None = None
        for part in raw_parts:
            if not isinstance(part, dict) or part.get("thought"):
                continue  # interim "thinking" images and text are not the answer
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            data = part.get("inlineData") or part.get("inline_data")
            if isinstance(data, dict):
                mime = data.get("mimeType") or data.get("mime_type") or ""
                if str(mime).startswith("image/"):
                    inline = data  # the last image part is the final one
        text = " ".join(t.strip() for t in texts if t.strip())[:MAX_TEXT_CHARS]
        if inline is None:
            said = f" The model said: {text}" if text else ""
            if finish in _BLOCKED_FINISH:
                finish_message = candidate.get("finishMessage") or ""
                raise content_blocked(
                    self.label,
                    f"no image (finishReason {finish}) {finish_message}{said}".strip(),
                    response_id,
                )
            raise ProviderFailure(
                f"Gemini returned no image (finishReason {finish or 'none'}).{said} "
                "Rephrase the prompt to ask for an image, or try again.",
                provider_request_id=response_id,
            )
        image = decode_base64_image(inline.get("data"), self.label, response_id)
        mime = sniff_image_mime(image) or str(inline.get("mimeType") or "image/png")

        metadata: dict[str, Any] = {
            "model_version": payload.get("modelVersion"),
            "finish_reason": finish,
            "text": text or None,
            "temperature": request.temperature,
            "seed": seed,
            "aspect_ratio": image_config.get("aspectRatio"),
            "image_size": image_config.get("imageSize"),
            "requested_size": f"{request.width}x{request.height}",
            "input_images": len(request.input_images) or None,
            "usage": payload.get("usageMetadata"),
            "elapsed_ms": reply.elapsed_ms,
        }
        return GenerationResult(
            image=image,
            mime=mime,
            model=request.model,
            provider_request_id=response_id,
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    def _gemini_error(self, reply: HttpReply) -> ProviderError:
        payload = reply.json_or_none()
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return error_for_status(
                label=self.label,
                status=reply.status,
                detail=self.http.redact(reply.text_snippet()),
                retry_after=parse_retry_after(reply.headers),
                request_id=None,
                key_setting=self.key_setting,
            )
        status_name = error.get("status") if isinstance(error.get("status"), str) else None
        message = self.http.redact(str(error.get("message") or ""))
        retry_after = parse_retry_after(reply.headers)
        reasons: set[str] = set()
        details = error.get("details") if isinstance(error.get("details"), list) else []
        for detail in details:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo") and retry_after is None:
                retry_after = parse_duration(detail.get("retryDelay"))
            if kind.endswith("google.rpc.ErrorInfo") and isinstance(detail.get("reason"), str):
                reasons.add(detail["reason"])
        if reasons & {"API_KEY_INVALID", "API_KEY_EXPIRED"} or reply.status == 401:
            # Gemini answers a bad key with 400 INVALID_ARGUMENT; never quote it back.
            return InvalidRequest(
                f"Gemini refused the API key (HTTP {reply.status}, "
                f"{', '.join(sorted(reasons)) or status_name or 'unauthenticated'}); "
                f"check {self.key_setting}."
            )
        return error_for_status(
            label=self.label,
            status=reply.status,
            detail=message,
            retry_after=retry_after,
            request_id=None,
            key_setting=self.key_setting,
            code_hint=status_name,
        )
