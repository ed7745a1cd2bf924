import pytest

from flowstudio.providers import (
    ImageProvider,
    LocalProvider,
    ProviderFailure,
    ProviderRegistry,
    UnknownProvider,
)


class FakeProvider(ImageProvider):
    name = "fake"

    def __init__(self, *, fail_close: bool = False) -> None:
        self.closed = False
        self.fail_close = fail_close

    def models(self):
        return ("fake-1",)

    def is_configured(self):
        return False

    async def generate(self, request):
        raise ProviderFailure("not implemented")

    async def aclose(self):
        self.closed = True
        if self.fail_close:
            raise RuntimeError(f"{self.name} close failed")


class OtherProvider(FakeProvider):
    name = "other"


def test_register_get_names_contains():
    registry = ProviderRegistry()
    local = LocalProvider()
    fake = FakeProvider()
    registry.register(local)
    registry.register(fake)

    assert registry.get("local") is local
    assert registry.get("fake") is fake
    assert registry.names() == ("local", "fake")
    assert "local" in registry and "missing" not in registry
    assert len(registry) == 2
    assert list(registry) == [local, fake]
    assert registry.configured_names() == ("local",)


def test_constructor_accepts_providers():
    registry = ProviderRegistry([LocalProvider(), FakeProvider()])
    assert registry.names() == ("local", "fake")


def test_unknown_provider_is_a_key_error_with_clear_message():
    registry = ProviderRegistry([LocalProvider()])
    with pytest.raises(UnknownProvider) as info:
        registry.get("openai")
    assert isinstance(info.value, KeyError)
    assert info.value.name == "openai"
    message = str(info.value)
    assert "unknown image provider 'openai'" in message
    assert "'local'" in message

    with pytest.raises(KeyError):
        ProviderRegistry().get("anything")
    assert "none" in str(UnknownProvider("x"))


def test_duplicate_registration_needs_replace():
    registry = ProviderRegistry([LocalProvider()])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(LocalProvider())
    replacement = LocalProvider(delay_seconds=1)
    registry.register(replacement, replace=True)
    assert registry.get("local") is replacement
    assert registry.names() == ("local",)


async def test_aclose_closes_every_provider():
    fake, other = FakeProvider(), OtherProvider()
    registry = ProviderRegistry([fake, LocalProvider(), other])
    await registry.aclose()
    assert fake.closed and other.closed


async def test_aclose_continues_past_failures():
    fake, other = FakeProvider(fail_close=True), OtherProvider()
    registry = ProviderRegistry([fake, other])
    with pytest.raises(RuntimeError, match="fake close failed"):
        await registry.aclose()
    assert other.closed

    both = ProviderRegistry([FakeProvider(fail_close=True), OtherProvider(fail_close=True)])
    with pytest.raises(ExceptionGroup) as info:
        await both.aclose()
    assert len(info.value.exceptions) == 2
