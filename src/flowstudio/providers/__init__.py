"""Image providers: a provider-neutral interface, the error tree and the built-in local renderer.

This package is infrastructure and imports nothing else from flowstudio.
"""

from .base import (
    ERROR_CODES,
    ContentBlocked,
    GenerationRequest,
    GenerationResult,
    ImageProvider,
    InputImage,
    InvalidRequest,
    ProviderError,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    error_class_for_code,
)
from .local import LocalProvider
from .registry import ProviderRegistry, UnknownProvider

__all__ = [
    "ERROR_CODES",
    "ContentBlocked",
    "GenerationRequest",
    "GenerationResult",
    "ImageProvider",
    "InputImage",
    "InvalidRequest",
    "LocalProvider",
    "ProviderError",
    "ProviderFailure",
    "ProviderRegistry",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "UnknownProvider",
    "error_class_for_code",
]
