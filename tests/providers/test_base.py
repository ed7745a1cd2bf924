import dataclasses
import pickle

import pytest

from flowstudio.providers import (
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

EXPECTED = {
    ProviderTimeout: ("provider_timeout", True),
    RateLimited: ("rate_limited", True),
    ContentBlocked: ("content_blocked", False),
    InvalidRequest: ("invalid_request", False),
    ProviderUnavailable: ("provider_unavailable", True),
    ProviderFailure: ("provider_error", False),
}


@pytest.mark.parametrize(("cls", "expected"), EXPECTED.items())
def test_error_codes_and_retryable(cls, expected):
    code, retryable = expected
    assert issubclass(cls, ProviderError)
    assert cls.code == code
    assert cls.retryable is retryable
    assert error_class_for_code(code) is cls


def test_error_codes_set_is_complete():
    assert ERROR_CODES == frozenset(code for code, _ in EXPECTED.values())
    assert ProviderError.code == "provider_error"
    assert ProviderError.retryable is False


def test_error_class_for_unknown_code():
    with pytest.raises(KeyError, match="nope"):
        error_class_for_code("nope")


def test_error_attributes_str_and_dict():
    err = RateLimited("slow down", retry_after=2.5, provider_request_id="req-1")
    assert err.message == "slow down"
    assert str(err) == "slow down"
    assert err.retry_after == 2.5
    assert err.provider_request_id == "req-1"
    assert "RateLimited" in repr(err) and "2.5" in repr(err)
    assert err.to_dict() == {
        "code": "rate_limited",
        "message": "slow down",
        "retryable": True,
        "retry_after": 2.5,
        "provider_request_id": "req-1",
    }
    plain = ProviderFailure("boom")
    assert plain.retry_after is None and plain.provider_request_id is None


def test_error_pickles_with_keyword_attributes():
    err = ProviderUnavailable("down", retry_after=1.0, provider_request_id="abc")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is ProviderUnavailable
    assert (copy.message, copy.retry_after, copy.provider_request_id) == ("down", 1.0, "abc")


def test_dataclasses_are_frozen_with_independent_defaults():
    a = GenerationRequest(prompt="p", model="m", width=64, height=64)
    b = GenerationRequest(prompt="p", model="m", width=64, height=64)
    assert a.options == {} and a.options is not b.options
    assert a.input_images == () and a.seed is None and a.temperature is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.prompt = "q"  # type: ignore[misc]
    result = GenerationResult(image=b"x" * 1000, mime="image/png", model="m")
    assert result.metadata == {} and result.provider_request_id is None
    assert "1000" in repr(result) and "xxxx" not in repr(result)
    image = InputImage(data=b"\x00" * 10, mime="image/png", step_id="s1")
    assert "step_id='s1'" in repr(image)


async def test_image_provider_is_abstract_and_closes_as_context_manager():
    with pytest.raises(TypeError):
        ImageProvider()  # type: ignore[abstract]

    closed = []

    class Dummy(ImageProvider):
        name = "dummy"

        def models(self):
            return ("m",)

        def is_configured(self):
            return False

        async def generate(self, request):
            raise ProviderFailure("never")

        async def aclose(self):
            closed.append(True)

    async with Dummy() as provider:
        assert provider.models() == ("m",)
    assert closed == [True]
    assert "dummy" in repr(Dummy())
