"""A name -> provider lookup owned by the service."""

from __future__ import annotations

from collections.abc import Iterator

from .base import ImageProvider

__all__ = ["ProviderRegistry", "UnknownProvider"]


class UnknownProvider(KeyError):
    """Raised by :meth:`ProviderRegistry.get` for a name that was never registered."""

    def __init__(self, name: str, available: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.name = name
        self.available = available

    def __str__(self) -> str:
        known = ", ".join(repr(n) for n in self.available) or "none"
        return f"unknown image provider {self.name!r} (registered: {known})"


class ProviderRegistry:
    def __init__(self, providers: tuple[ImageProvider, ...] | list[ImageProvider] = ()) -> None:
        self._providers: dict[str, ImageProvider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: ImageProvider, *, replace: bool = False) -> None:
        """Add ``provider`` under its ``name``; a duplicate name is a :class:`ValueError`
        unless ``replace`` is true."""
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(provider).__name__} has no provider name")
        if name in self._providers and not replace:
            raise ValueError(f"an image provider named {name!r} is already registered")
        self._providers[name] = provider

    def get(self, name: str) -> ImageProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(name, self.names()) from None

    def names(self) -> tuple[str, ...]:
        """Registered provider names, in registration order."""
        return tuple(self._providers)

    def configured_names(self) -> tuple[str, ...]:
        """Names of the providers that report :meth:`ImageProvider.is_configured`."""
        return tuple(n for n, p in self._providers.items() if p.is_configured())

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __iter__(self) -> Iterator[ImageProvider]:
        return iter(tuple(self._providers.values()))

    def __len__(self) -> int:
        return len(self._providers)

    def __repr__(self) -> str:
        return f"ProviderRegistry({list(self._providers)!r})"

    async def aclose(self) -> None:
        """Close every provider, even if some of them fail to close.

        A single failure is re-raised as is; several are raised as an ExceptionGroup.
        """
        errors: list[Exception] = []
        for provider in tuple(self._providers.values()):
            try:
                await provider.aclose()
            except Exception as exc:  # noqa: BLE001 - close the rest first
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("closing image providers failed", errors)
