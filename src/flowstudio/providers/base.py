"""Provider-neutral request/result types, the provider error tree and the provider ABC.

Providers are infrastructure: they turn one :class:`GenerationRequest` into one
:class:`GenerationResult` or raise a :class:`ProviderError`. They never retry on
their own; the ``retryable`` flag and ``retry_after`` hint on each error tell the
service whether and when a retry makes sense.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "ERROR_CODES",
    "ContentBlocked",
    "GenerationRequest",
    "GenerationResult",
    "ImageProvider",
    "InputImage",
    "InvalidRequest",
    "ProviderError",
    "ProviderFailure",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "error_class_for_code",
]


@dataclass(frozen=True)
class InputImage:
    """An image fed into a generation (edit steps); ``step_id`` names the producing step."""

    data: bytes
    mime: str
    step_id: str | None = None

    def __repr__(self) -> str:  # keep logs readable: never dump the raw bytes
        return f"InputImage(mime={self.mime!r}, step_id={self.step_id!r}, size={len(self.data)})"


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str
    width: int
    height: int
    seed: int | None = None
    temperature: float | None = None
    input_images: tuple[InputImage, ...] = ()
    # Provider-specific extras taken from the flow step.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationResult:
    image: bytes
    mime: str
    model: str
    provider_request_id: str | None = None
    # Free-form details such as the revised prompt, timings or the model version.
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"GenerationResult(mime={self.mime!r}, model={self.model!r}, "
            f"provider_request_id={self.provider_request_id!r}, size={len(self.image)}, "
            f"metadata={self.metadata!r})"
        )


class ProviderError(Exception):
    """Base class of every error a provider raises.

    ``code`` is a stable machine-readable identifier (see :data:`ERROR_CODES`);
    ``retryable`` tells the caller whether repeating the same request may succeed.
    """

    code: ClassVar[str] = "provider_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.provider_request_id = provider_request_id

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = ""
        if self.retry_after is not None:
            extra += f", retry_after={self.retry_after!r}"
        if self.provider_request_id is not None:
            extra += f", provider_request_id={self.provider_request_id!r}"
        return f"{type(self).__name__}({self.message!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not part of ``args``; keep them across pickling.
        return (
            _rebuild_error,
            (type(self), self.message, self.retry_after, self.provider_request_id),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, suitable for storing on a failed step."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "provider_request_id": self.provider_request_id,
        }


def _rebuild_error(
    cls: type[ProviderError],
    message: str,
    retry_after: float | None,
    provider_request_id: str | None,
) -> ProviderError:
    return cls(message, retry_after=retry_after, provider_request_id=provider_request_id)


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    retryable = True


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True


class ContentBlocked(ProviderError):
    code = "content_blocked"
    retryable = False


class InvalidRequest(ProviderError):
    code = "invalid_request"
    retryable = False


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    retryable = True


class ProviderFailure(ProviderError):
    """Generic, non-retryable provider failure."""

    code = "provider_error"
    retryable = False


_ERROR_CLASSES: Mapping[str, type[ProviderError]] = {
    cls.code: cls
    for cls in (
        ProviderTimeout,
        RateLimited,
        ContentBlocked,
        InvalidRequest,
        ProviderUnavailable,
        ProviderFailure,
    )
}

ERROR_CODES: frozenset[str] = frozenset(_ERROR_CLASSES)


def error_class_for_code(code: str) -> type[ProviderError]:
    """The concrete error class for ``code`` (``"provider_error"`` -> :class:`ProviderFailure`).

    Raises :class:`KeyError` for a code outside :data:`ERROR_CODES`.
    """
    try:
        return _ERROR_CLASSES[code]
    except KeyError:
        raise KeyError(f"unknown provider error code {code!r}") from None


class ImageProvider(ABC):
    """One image generation backend.

    Implementations must be safe to call concurrently from one event loop and must
    not retry internally.
    """

    name: ClassVar[str]

    @abstractmethod
    def models(self) -> Sequence[str]:
        """The model identifiers this provider accepts in ``GenerationRequest.model``."""

    @abstractmethod
    def is_configured(self) -> bool:
        """Whether the provider has everything it needs (API keys etc.) to be used."""

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Produce one image or raise a :class:`ProviderError`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release network clients or other resources."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        name = getattr(type(self), "name", type(self).__name__)
        return f"<{type(self).__name__} name={name!r}>"
