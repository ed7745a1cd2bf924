"""Replicate: create a prediction, wait for it (``Prefer: wait``, then polling), fetch the
output file, and cancel the prediction when FlowStudio stops waiting.

* ``owner/name`` models run through ``POST {base}/models/{owner}/{name}/predictions``
  (official models); ``owner/name:version`` through ``POST {base}/predictions`` with
  ``{"version": ...}``. The body is ``{"input": {...}}``.
* The input is ``prompt``, ``seed`` (int32) and ``aspect_ratio`` (the FLUX ratio closest to
  the step's size; Replicate ignores inputs a model does not declare), then the step's
  ``options.input`` table on top. Input images are sent as data URIs when small, else
  uploaded first through ``POST {base}/files`` (and deleted afterwards); they go to
  ``input_image`` (or the model's known field, or ``options.image_input_key``; set
  ``options.image_input_list = true`` for models that take a list).
* ``Prefer: wait=N`` (N below the read timeout, at most 60) lets fast models answer in the
  create call; otherwise ``GET {base}/predictions/{id}`` is polled. ``Cancel-After`` asks
  Replicate to stop a prediction we no longer wait for even if this process dies.
* If our own wait is cut short (the worker's timeout, shutdown, an error), the prediction
  is canceled with ``POST {base}/predictions/{id}/cancel``.
* The prediction id is the request id; its ``version`` is recorded as the model version.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
from typing import Any, ClassVar

import httpx

from .base import (
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ProviderError,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from .http import (
    HttpImageProvider,
    HttpReply,
    HttpTimeouts,
    ProviderHttpClient,
    check_option_keys,
    closest_aspect_ratio,
    content_blocked,
    decode_base64_image,
    error_for_status,
    image_filename,
    input_mime,
    join_url,
    output_fetch_error,
    parse_retry_after,
    sniff_image_mime,
)

__all__ = ["DEFAULT_BASE_URL", "ReplicateProvider"]

log = logging.getLogger("flowstudio.providers.replicate")

DEFAULT_BASE_URL = "https://api.replicate.com/v1"

FLUX_ASPECT_RATIOS = (
    "1:1",
    "16:9",
    "21:9",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "3:4",
    "4:3",
    "9:16",
    "9:21",
)
#: Replicate recommends data URIs only for files under 1 MB; larger inputs are uploaded.
INLINE_INPUT_LIMIT = 1_000_000
MAX_WAIT_SECONDS = 60
MAX_POLL_FAILURES = 3
CANCEL_GRACE_SECONDS = 5.0
_INT32 = 2**31
_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_MODEL_RE = re.compile(r"^([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)(?::([A-Za-z0-9]+))?$")
# Replicate's sensitive-content refusal is E005; FLUX's own checker says "NSFW".
_BLOCKED_RE = re.compile(r"\bE005\b|nsfw|flagged as sensitive|content polic|safety", re.I)

# Where known models take their input image(s): (input name, is a list).
_IMAGE_INPUTS: dict[str, tuple[str, bool]] = {
    "black-forest-labs/flux-kontext-pro": ("input_image", False),
    "black-forest-labs/flux-kontext-max": ("input_image", False),
    "black-forest-labs/flux-kontext-dev": ("input_image", False),
    "google/nano-banana": ("image_input", True),
}


class ReplicateProvider(HttpImageProvider):
    name: ClassVar[str] = "replicate"
    label: ClassVar[str] = "Replicate"
    MODELS: ClassVar[tuple[str, ...]] = (
        "black-forest-labs/flux-schnell",
        "black-forest-labs/flux-dev",
        "black-forest-labs/flux-1.1-pro",
        "black-forest-labs/flux-kontext-pro",
        "google/nano-banana",
    )
    OPTIONS: ClassVar[tuple[str, ...]] = ("input", "image_input_key", "image_input_list")
    key_setting: ClassVar[str] = "FLOWSTUDIO_REPLICATE_API_TOKEN"
    base_url_setting: ClassVar[str] = "FLOWSTUDIO_REPLICATE_BASE_URL"

    def __init__(
        self,
        *,
        api_token: str | None,
        base_url: str = DEFAULT_BASE_URL,
        timeouts: HttpTimeouts | None = None,
        poll_interval: float = 1.0,
        cancel_after_seconds: float | None = None,
        inline_input_limit: int = INLINE_INPUT_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not (math.isfinite(poll_interval) and poll_interval > 0):
            raise ValueError("poll_interval must be a positive number of seconds")
        self._api_token = api_token or None
        self.base_url = base_url.rstrip("/")
        self.poll_interval = float(poll_interval)
        self.cancel_after_seconds = cancel_after_seconds
        self.inline_input_limit = inline_input_limit
        timeouts = timeouts or HttpTimeouts()
        # Prefer: wait holds the create request open; keep it inside our read timeout.
        self.wait_seconds = min(MAX_WAIT_SECONDS, int(timeouts.read) - 1)
        self.http = ProviderHttpClient(
            label=self.label,
            timeouts=timeouts,
            secrets=(self._api_token,),
            base_url_setting=self.base_url_setting,
            transport=transport,
        )

    def missing_settings(self) -> tuple[str, ...]:
        return () if self._api_token else (self.key_setting,)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_token}"}

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        options = dict(request.options)
        check_option_keys(options, self.OPTIONS, self.label)
        overrides = options.get("input") or {}
        if not isinstance(overrides, dict):
            raise InvalidRequest("the Replicate option 'input' must be a table of model inputs.")
        match = _MODEL_RE.fullmatch(request.model)
        if match is None:
            raise InvalidRequest(
                f"{request.model!r} is not a Replicate model: use 'owner/name' or "
                "'owner/name:version'."
            )
        owner, model_name, version = match.groups()

        model_input: dict[str, Any] = {"prompt": request.prompt}
        seed = None
        if request.seed is not None:
            seed = request.seed % _INT32
            model_input["seed"] = seed
        aspect = closest_aspect_ratio(request.width, request.height, FLUX_ASPECT_RATIOS)
        model_input["aspect_ratio"] = aspect

        uploaded: list[str] = []
        try:
            if request.input_images:
                key, as_list = self._image_input(f"{owner}/{model_name}", options)
                if len(request.input_images) > 1 and not as_list:
                    raise InvalidRequest(
                        f"{request.model} takes one input image in '{key}'; this step has "
                        f"{len(request.input_images)}. Set options.image_input_list = true if "
                        "the model takes a list, or list a single input step."
                    )
                values = [
                    await self._input_file(image, index, uploaded)
                    for index, image in enumerate(request.input_images)
                ]
                model_input[key] = values if as_list else values[0]
            model_input.update(overrides)
            return await self._run(request, owner, model_name, version, model_input, seed)
        finally:
            for file_id in uploaded:
                await self._delete_file_quietly(file_id)

    async def _run(
        self,
        request: GenerationRequest,
        owner: str,
        model_name: str,
        version: str | None,
        model_input: dict[str, Any],
        seed: int | None,
    ) -> GenerationResult:
        headers: dict[str, str] = {}
        if self.wait_seconds >= 1:
            headers["Prefer"] = f"wait={self.wait_seconds}"
        if self.cancel_after_seconds:
            # Documented as a duration such as "1m"; whole minutes, rounded up.
            headers["Cancel-After"] = f"{max(1, math.ceil(self.cancel_after_seconds / 60))}m"
        if version:
            url = join_url(self.base_url, "predictions")
            body: dict[str, Any] = {"version": version, "input": model_input}
        else:
            url = join_url(self.base_url, "models", owner, model_name, "predictions")
            body = {"input": model_input}
        reply = await self.http.send(
            "POST", url, auth_headers=self._auth, headers=headers, json_body=body
        )
        if not reply.ok:
            raise self._replicate_error(reply, None)
        prediction = self._prediction(reply, None)
        prediction_id = prediction["id"]

        finished = False
        try:
            # Sync mode may hand over file outputs while the status still says processing.
            from_wait = "Prefer" in headers
            failures = 0
            while True:
                status = prediction.get("status")
                if status == "succeeded" or (
                    from_wait and status in ("starting", "processing") and prediction.get("output")
                ):
                    break
                if status in _TERMINAL:
                    finished = True
                    raise self._failed_prediction(prediction)
                from_wait = False
                await asyncio.sleep(self.poll_interval)
                try:
                    poll = await self.http.send(
                        "GET",
                        join_url(self.base_url, "predictions", prediction_id),
                        auth_headers=self._auth,
                    )
                    if not poll.ok:
                        raise self._replicate_error(poll, prediction_id)
                    prediction = self._prediction(poll, prediction_id)
                    failures = 0
                except (ProviderUnavailable, ProviderTimeout, RateLimited) as exc:
                    # The prediction keeps running; a passing hiccup must not lose it.
                    failures += 1
                    if failures > MAX_POLL_FAILURES:
                        exc.provider_request_id = exc.provider_request_id or prediction_id
                        raise
            # The outputs exist: nothing left to cancel, even if the download fails.
            finished = True
            image = await self._fetch_output(prediction)
        finally:
            if not finished:
                await self._cancel_quietly(prediction_id)

        metrics = prediction.get("metrics") if isinstance(prediction.get("metrics"), dict) else None
        metadata: dict[str, Any] = {
            "prediction_id": prediction_id,
            "model_version": prediction.get("version")
            if isinstance(prediction.get("version"), str)
            else None,
            "status": prediction.get("status"),
            "seed": seed,
            "aspect_ratio": model_input.get("aspect_ratio"),
            "requested_size": f"{request.width}x{request.height}",
            "input_overrides": sorted(k for k in request.options.get("input", {}) or {}) or None,
            "ignored_settings": ["temperature"] if request.temperature is not None else None,
            "input_images": len(request.input_images) or None,
            "metrics": metrics,
            "created_at": prediction.get("created_at"),
            "completed_at": prediction.get("completed_at"),
        }
        return GenerationResult(
            image=image,
            mime=sniff_image_mime(image) or "image/webp",
            model=request.model,
            provider_request_id=prediction_id,
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    # ------------------------------------------------------------------------- pieces

    def _image_input(self, model: str, options: dict[str, Any]) -> tuple[str, bool]:
        known_key, known_list = _IMAGE_INPUTS.get(model, ("input_image", False))
        key = options.get("image_input_key") or known_key
        as_list = options.get("image_input_list")
        if not isinstance(key, str):
            raise InvalidRequest("the Replicate option 'image_input_key' must be a string.")
        return key, bool(known_list if as_list is None else as_list)

    async def _input_file(self, image: Any, index: int, uploaded: list[str]) -> str:
        data = bytes(image.data)
        mime = input_mime(data, image.mime)
        if len(data) <= self.inline_input_limit:
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        reply = await self.http.send(
            "POST",
            join_url(self.base_url, "files"),
            auth_headers=self._auth,
            files=[("content", (image_filename(index, mime), data, mime))],
        )
        if not reply.ok:
            raise self._replicate_error(reply, None)
        payload = reply.json_or_none()
        urls = payload.get("urls") if isinstance(payload, dict) else None
        if not isinstance(urls, dict) or not isinstance(urls.get("get"), str):
            raise self._malformed(reply, "a file upload answer without urls.get", None)
        if isinstance(payload.get("id"), str):
            uploaded.append(payload["id"])
        return urls["get"]

    def _prediction(self, reply: HttpReply, prediction_id: str | None) -> dict[str, Any]:
        payload = reply.json_or_none()
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise self._malformed(reply, "a prediction that is not valid JSON", prediction_id)
        return payload

    def _failed_prediction(self, prediction: dict[str, Any]) -> ProviderError:
        prediction_id = prediction.get("id")
        status = prediction.get("status")
        error = self.http.redact(str(prediction.get("error") or "")).strip()
        if status in ("canceled", "aborted"):
            return ProviderFailure(
                f"The Replicate prediction was {status} before it finished; try again.",
                provider_request_id=prediction_id,
            )
        if error and _BLOCKED_RE.search(error):
            return content_blocked(self.label, error, prediction_id)
        return ProviderFailure(
            f"The Replicate prediction failed: {error or 'no reason given'}. Check the step's "
            "model and options.input, or try again.",
            provider_request_id=prediction_id,
        )

    async def _fetch_output(self, prediction: dict[str, Any]) -> bytes:
        prediction_id = prediction["id"]
        output = prediction.get("output")
        if isinstance(output, list):
            output = next((item for item in output if isinstance(item, str) and item), None)
        if not isinstance(output, str) or not output:
            raise ProviderFailure(
                "The Replicate prediction finished without an image output; check that the "
                "step's model produces images.",
                provider_request_id=prediction_id,
            )
        if output.startswith("data:"):
            return decode_base64_image(output, self.label, prediction_id)
        # Output files live on a delivery host; our token goes only to the API's own host.
        same_host = httpx.URL(output).host == httpx.URL(self.base_url).host
        reply = await self.http.send(
            "GET", output, auth_headers=self._auth if same_host else None, follow_redirects=True
        )
        if not reply.ok:
            raise output_fetch_error(self.label, reply, prediction_id)
        if not reply.content:
            raise ProviderFailure(
                "Replicate's output file is empty.", provider_request_id=prediction_id
            )
        return reply.content

    async def _cancel_quietly(self, prediction_id: str) -> None:
        """Cancel a prediction we stopped waiting for. Shielded, so that a second cancellation
        of our task does not cut the request off, and bounded, so shutdown is not held up."""
        task = asyncio.ensure_future(
            self.http.send(
                "POST",
                join_url(self.base_url, "predictions", prediction_id, "cancel"),
                auth_headers=self._auth,
                read_timeout=CANCEL_GRACE_SECONDS,
            )
        )
        task.add_done_callback(_retrieve_exception)
        try:
            reply = await asyncio.wait_for(asyncio.shield(task), CANCEL_GRACE_SECONDS)
        except (ProviderError, TimeoutError) as exc:
            log.warning("could not cancel Replicate prediction %s: %s", prediction_id, exc)
            return
        if reply.ok:
            log.info("canceled Replicate prediction %s", prediction_id)
        else:
            log.warning(
                "canceling Replicate prediction %s answered HTTP %d", prediction_id, reply.status
            )

    async def _delete_file_quietly(self, file_id: str) -> None:
        with contextlib.suppress(ProviderError, TimeoutError):
            await asyncio.wait_for(
                self.http.send(
                    "DELETE",
                    join_url(self.base_url, "files", file_id),
                    auth_headers=self._auth,
                    read_timeout=CANCEL_GRACE_SECONDS,
                ),
                CANCEL_GRACE_SECONDS,
            )

    def _replicate_error(self, reply: HttpReply, prediction_id: str | None) -> ProviderError:
        payload = reply.json_or_none()
        detail = ""
        if isinstance(payload, dict):
            # Problem details: {"title", "detail", "status", "invalid_fields": [...]}
            detail = str(payload.get("detail") or payload.get("title") or "")
            fields = payload.get("invalid_fields")
            if isinstance(fields, list):
                described = [
                    f"{item.get('field')}: {item.get('description')}"
                    for item in fields
                    if isinstance(item, dict)
                ]
                if described:
                    detail = f"{detail} ({'; '.join(described)})"
        else:
            detail = reply.text_snippet()
        detail = self.http.redact(detail)
        if reply.status in (400, 422) and _BLOCKED_RE.search(detail):
            return content_blocked(self.label, detail, prediction_id)
        return error_for_status(
            label=self.label,
            status=reply.status,
            detail=detail,
            retry_after=parse_retry_after(reply.headers),
            request_id=prediction_id,
            key_setting=self.key_setting,
        )


def _retrieve_exception(task: asyncio.Future[Any]) -> None:
    # A shielded cancel request may finish after nobody waits for it any more.
    if not task.cancelled():
        task.exception()
