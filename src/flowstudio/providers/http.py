"""HTTP plumbing shared by the real image providers: one pooled httpx client per provider,
explicit timeouts, response size limits, Retry-After parsing and the mapping of transport
failures and HTTP statuses onto the provider error tree.

Secrets (API keys and tokens) are sent only as request headers built per request, never
put in URLs, never logged, and removed from every message that leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from ..imaging import extension_for, sniff_image_mime
from .base import (
    ContentBlocked,
    GenerationRequest,
    GenerationResult,
    ImageProvider,
    InvalidRequest,
    ProviderError,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "HttpImageProvider",
    "HttpReply",
    "HttpTimeouts",
    "ProviderHttpClient",
    "check_model_name",
    "check_option_keys",
    "closest_aspect_ratio",
    "closest_size",
    "content_blocked",
    "decode_base64_image",
    "error_for_status",
    "image_filename",
    "input_mime",
    "join_url",
    "output_fetch_error",
    "parse_duration",
    "parse_retry_after",
    "provider_detail",
    "sniff_image_mime",
]

log = logging.getLogger("flowstudio.providers")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
#: Largest response body read from a provider (base64 images of 4096² PNGs fit easily).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Longest provider message quoted in an error.
MAX_DETAIL_CHARS = 400
USER_AGENT = "FlowStudio/0.1 (+https://github.com/flowstudio) httpx"

# Model identifiers become URL path segments; keep them to what real model ids use.
_MODEL_RE = re.compile(r"^[A-Za-z0-9@][A-Za-z0-9@._:/+-]{0,199}$")


@dataclass(frozen=True)
class HttpTimeouts:
    """Seconds to wait for a connection and for each read (and write) on it."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT

    def __post_init__(self) -> None:
        for label, value in (("connect", self.connect), ("read", self.read)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{label} timeout must be a positive number of seconds")

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect, read=self.read, write=self.read, pool=self.connect
        )


@dataclass(frozen=True)
class HttpReply:
    """A fully read response."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed_ms: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json_or_none(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            return None

    def text_snippet(self, limit: int = MAX_DETAIL_CHARS) -> str:
        text = self.content[: limit * 4].decode("utf-8", "replace")
        return _one_line(text, limit)


class ProviderHttpClient:
    """A lazily created, pooled ``httpx.AsyncClient`` for one provider.

    Authentication headers are passed per request (``auth_headers``) so that requests to
    other hosts (output file downloads) never carry them.
    """

    def __init__(
        self,
        *,
        label: str,
        timeouts: HttpTimeouts,
        secrets: Iterable[str | None] = (),
        base_url_setting: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.label = label
        self.timeouts = timeouts
        self.base_url_setting = base_url_setting
        self.max_response_bytes = max_response_bytes
        self._secrets = tuple(s for s in secrets if s)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the running event loop, and reused for every
        # request after that (keep-alive connections, one TLS handshake per host).
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=self.timeouts.as_httpx(),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                headers={"User-Agent": USER_AGENT},
                transport=self._transport,
                follow_redirects=False,
                trust_env=True,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    async def send(
        self,
        method: str,
        url: str,
        *,
        auth_headers: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Sequence[tuple[str, tuple[str, bytes, str]]] | None = None,
        follow_redirects: bool = False,
        read_timeout: float | None = None,
    ) -> HttpReply:
        """Send one request and read the whole body, mapping transport failures to
        :class:`ProviderError`. HTTP error statuses are returned, not raised."""
        all_headers = {**(headers or {}), **(auth_headers or {})}
        timeout = None
        if read_timeout is not None:
            timeout = httpx.Timeout(
                connect=self.timeouts.connect,
                read=read_timeout,
                write=self.timeouts.read,
                pool=self.timeouts.connect,
            )
        started = time.perf_counter()
        host = _host(url)
        try:
            request = self._http().build_request(
                method,
                url,
                headers=all_headers,
                json=json_body,
                data=data,
                files=files,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response = await self._http().send(
                request, stream=True, follow_redirects=follow_redirects
            )
            try:
                content = await self._read_limited(response)
            finally:
                await response.aclose()
        except httpx.ConnectTimeout:
            raise ProviderUnavailable(
                f"{self.label} could not be reached at {host} within "
                f"{self.timeouts.connect:g} s; check the network and try again."
            ) from None
        except httpx.TimeoutException:
            waited = read_timeout if read_timeout is not None else self.timeouts.read
            raise ProviderTimeout(
                f"{self.label} did not answer within {waited:g} s; try again later "
                "(FLOWSTUDIO_PROVIDER_READ_TIMEOUT_SECONDS sets how long to wait)."
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            where = f"; check {self.base_url_setting}" if self.base_url_setting else ""
            raise InvalidRequest(
                self.redact(f"{self.label} URL {_safe_url(url)} is not usable: {exc}{where}.")
            ) from None
        except httpx.ConnectError as exc:
            raise ProviderUnavailable(
                self.redact(
                    f"{self.label} could not be reached at {host} ({_one_line(str(exc), 200)}); "
                    "check the network and the base URL setting, then try again."
                )
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                self.redact(
                    f"The connection to {self.label} at {host} failed "
                    f"({type(exc).__name__}: {_one_line(str(exc), 200)}); try again."
                )
            ) from None
        reply = HttpReply(
            status=response.status_code,
            headers=response.headers,
            content=content,
            url=str(response.url),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        log.debug(
            "%s %s %s -> %d (%d bytes, %.0f ms)",
            self.label,
            method,
            _safe_url(url),
            reply.status,
            len(content),
            reply.elapsed_ms,
        )
        return reply

    async def _read_limited(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise ProviderFailure(
                f"{self.label} sent a response of {int(declared)} bytes, more than FlowStudio "
                f"accepts ({self.max_response_bytes} bytes)."
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise ProviderFailure(
                    f"{self.label} sent a response larger than FlowStudio accepts "
                    f"({self.max_response_bytes} bytes)."
                )
            chunks.append(chunk)
        return b"".join(chunks)


class HttpImageProvider(ImageProvider):
    """Common ground of the HTTP providers: configuration checks, option checks, closing.

    Subclasses set ``label`` (shown in messages), ``MODELS`` (the documented models, for
    listings; other model ids are passed through so new models work without a release),
    ``key_setting`` (the setting that holds the credential) and implement ``_generate``.
    """

    label: ClassVar[str]
    MODELS: ClassVar[tuple[str, ...]] = ()
    key_setting: ClassVar[str]
    base_url_setting: ClassVar[str]

    http: ProviderHttpClient

    def models(self) -> Sequence[str]:
        return self.MODELS

    def missing_settings(self) -> tuple[str, ...]:
        """The settings that still have to be set before this provider can be used."""
        raise NotImplementedError

    def is_configured(self) -> bool:
        return not self.missing_settings()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        missing = self.missing_settings()
        if missing:
            raise InvalidRequest(
                f"The {self.label} provider is not configured: set {' and '.join(missing)} "
                "and restart FlowStudio (`flowstudio providers` shows what is set)."
            )
        check_model_name(request.model, self.label)
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidRequest(f"{self.label} needs a non-empty prompt.")
        return await self._generate(request)

    async def _generate(self, request: GenerationRequest) -> GenerationResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.http.aclose()

    def _malformed(self, reply: HttpReply, what: str, request_id: str | None) -> ProviderFailure:
        return ProviderFailure(
            f"{self.label} sent {what} (HTTP {reply.status}, {reply.content_type or 'no type'}: "
            f"{self.http.redact(reply.text_snippet(120))!r}); FlowStudio cannot read it.",
            provider_request_id=request_id,
        )


# --------------------------------------------------------------------------- errors


def error_for_status(
    *,
    label: str,
    status: int,
    detail: str,
    retry_after: float | None,
    request_id: str | None,
    key_setting: str,
    code_hint: str | None = None,
) -> ProviderError:
    """The provider error for an HTTP error status (``detail`` is the provider's message)."""
    detail = _one_line(detail, MAX_DETAIL_CHARS)
    said = f": {detail}" if detail else ""
    hint = f", {code_hint}" if code_hint else ""
    kwargs: dict[str, Any] = {"retry_after": retry_after, "provider_request_id": request_id}
    if status == 401:
        # Never quote a 401 body: some providers echo part of the key back.
        return InvalidRequest(
            f"{label} refused the credentials (HTTP 401{hint}); check {key_setting}.", **kwargs
        )
    if status == 403:
        return InvalidRequest(
            f"{label} denied access (HTTP 403{hint}){said}. Check that {key_setting} is allowed "
            "to use this model.",
            **kwargs,
        )
    if status == 404:
        return InvalidRequest(
            f"{label} does not know this model or endpoint (HTTP 404{hint}){said}. "
            "Check the step's model and the provider's base URL.",
            **kwargs,
        )
    if status == 408:
        return ProviderTimeout(f"{label} timed out (HTTP 408{hint}){said}; try again.", **kwargs)
    if status == 413:
        return InvalidRequest(
            f"{label} says the request is too large (HTTP 413{hint}){said}; use fewer or "
            "smaller input images.",
            **kwargs,
        )
    if status == 429:
        wait = f" Retry after {retry_after:g} s." if retry_after is not None else ""
        return RateLimited(
            f"{label} is rate limiting requests (HTTP 429{hint}){said}.{wait}", **kwargs
        )
    if status == 504:
        return ProviderTimeout(
            f"{label} timed out upstream (HTTP 504{hint}){said}; try again later.", **kwargs
        )
    if 500 <= status < 600:
        return ProviderUnavailable(
            f"{label} had a server error (HTTP {status}{hint}){said}; try again later.", **kwargs
        )
    if 400 <= status < 500:
        return InvalidRequest(
            f"{label} rejected the request (HTTP {status}{hint}){said}. Check the step's "
            "model, size and options.",
            **kwargs,
        )
    return ProviderFailure(
        f"{label} answered with an unexpected HTTP {status}{hint}{said}.", **kwargs
    )


def content_blocked(label: str, detail: str, request_id: str | None) -> ContentBlocked:
    detail = _one_line(detail, MAX_DETAIL_CHARS)
    said = f": {detail}" if detail else ""
    return ContentBlocked(
        f"{label} refused this request under its content policy{said}. Change the prompt "
        "or the input images and try again.",
        provider_request_id=request_id,
    )


def output_fetch_error(label: str, reply: HttpReply, request_id: str | None) -> ProviderError:
    """The error for a generated image that could not be downloaded from its URL."""
    message = (
        f"{label} made the image, but downloading it failed (HTTP {reply.status}: "
        f"{reply.text_snippet(120)})"
    )
    retry_after = parse_retry_after(reply.headers)
    if reply.status == 429 or reply.status >= 500:
        return ProviderUnavailable(
            f"{message}; try again.", retry_after=retry_after, provider_request_id=request_id
        )
    return ProviderFailure(
        f"{message}; the file may have expired. Generate again.", provider_request_id=request_id
    )


def parse_retry_after(
    headers: Mapping[str, str] | httpx.Headers, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = None
        if value is not None and math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(value) or value < 0:
        return None
    return value


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """A protobuf JSON duration such as ``"37s"`` or ``"0.5s"`` in seconds."""
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.match(value)
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------- helpers


def check_model_name(model: str, label: str) -> None:
    if not isinstance(model, str) or not _MODEL_RE.fullmatch(model) or ".." in model:
        raise InvalidRequest(f"{model!r} is not a valid {label} model id.")


def check_option_keys(options: Mapping[str, Any], allowed: Iterable[str], label: str) -> None:
    """Refuse step options this provider does not understand (typo protection)."""
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"unknown {label} option(s) {', '.join(repr(k) for k in unknown)} in the flow step; "
            f"accepted: {', '.join(allowed)}."
        )


def decode_base64_image(value: Any, label: str, request_id: str | None) -> bytes:
    """Decode base64 (optionally a ``data:`` URI) image data from a provider."""
    if not isinstance(value, str) or not value:
        raise ProviderFailure(f"{label} returned no image data.", provider_request_id=request_id)
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ProviderFailure(
            f"{label} returned image data that is not valid base64.",
            provider_request_id=request_id,
        ) from None
    if not data:
        raise ProviderFailure(f"{label} returned an empty image.", provider_request_id=request_id)
    return data


def image_filename(index: int, mime: str) -> str:
    return f"input-{index + 1}.{extension_for(mime, 'png')}"


def input_mime(data: bytes, declared: str) -> str:
    return sniff_image_mime(data) or (declared if declared.startswith("image/") else "image/png")


def closest_size(width: int, height: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The supported size whose aspect ratio (then area) is nearest to ``width``×``height``."""
    target = math.log(width / height)
    area = width * height
    return min(
        sizes,
        key=lambda s: (round(abs(math.log(s[0] / s[1]) - target), 6), abs(s[0] * s[1] - area)),
    )


def closest_aspect_ratio(width: int, height: int, ratios: Sequence[str]) -> str:
    """The ``"W:H"`` ratio from ``ratios`` nearest to ``width``×``height`` (log scale)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(part) for part in ratio.split(":"))
        return abs(math.log(w / h) - target)

    return min(ratios, key=distance)


def provider_detail(payload: Any) -> str:
    """A human message from common error body shapes."""
    if isinstance(payload, dict):
        for key in ("error", "detail", "message", "title", "errors"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                inner = provider_detail(value)
                if inner:
                    return inner
            if isinstance(value, list) and value:
                parts = [provider_detail(v) if not isinstance(v, str) else v for v in value]
                joined = "; ".join(p for p in parts if p)
                if joined:
                    return joined
    return ""


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except (httpx.InvalidURL, TypeError):
        return "an invalid URL"


def _safe_url(url: str) -> str:
    """The URL without query string or user info (neither ever holds our keys, but be sure)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(invalid URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def join_url(base_url: str, *segments: str) -> str:
    """``base_url`` + ``/segment/...``; segments are used as given (model ids keep their ``/``)."""
    return base_url.rstrip("/") + "/" + "/".join(s.strip("/") for s in segments)


class KeyedHttpImageProvider(HttpImageProvider):
    """An HTTP provider configured by one API key and a base URL (OpenAI, Gemini)."""

    DEFAULT_BASE_URL: ClassVar[str]

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeouts: HttpTimeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key or None
        self.base_url = (base_url or self.DEFAULT_BASE_URL).rstrip("/")
        self.http = ProviderHttpClient(
            label=self.label,
            timeouts=timeouts or HttpTimeouts(),
            secrets=(self._api_key,),
            base_url_setting=self.base_url_setting,
            transport=transport,
        )

    def missing_settings(self) -> tuple[str, ...]:
        return () if self._api_key else (self.key_setting,)
