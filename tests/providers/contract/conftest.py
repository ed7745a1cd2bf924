"""Contract-test fixtures: a fake provider API on 127.0.0.1, sample images, and a guard that
keeps every test here off the internet even when real keys are set in the environment."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.fixtures.flows import png_bytes
from tests.providers.contract.fakeserver import FakeServer, running_fake_server

# Port 9 (discard) on loopback: nothing listens, so a stray default fails fast and locally.
UNREACHABLE = "http://127.0.0.1:9"
SECRET_ENV = (
    "FLOWSTUDIO_OPENAI_API_KEY",
    "FLOWSTUDIO_GEMINI_API_KEY",
    "FLOWSTUDIO_CLOUDFLARE_API_TOKEN",
    "FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID",
    "FLOWSTUDIO_REPLICATE_API_TOKEN",
)
BASE_URL_ENV = (
    "FLOWSTUDIO_OPENAI_BASE_URL",
    "FLOWSTUDIO_GEMINI_BASE_URL",
    "FLOWSTUDIO_CLOUDFLARE_BASE_URL",
    "FLOWSTUDIO_REPLICATE_BASE_URL",
)


@pytest.fixture(autouse=True)
def _no_real_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in BASE_URL_ENV:
        monkeypatch.setenv(name, UNREACHABLE)
    # The adapters honour proxy variables (trust_env); the fake APIs are local.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def fake_api() -> Iterator[FakeServer]:
    with running_fake_server() as server:
        yield server


@pytest.fixture
def fake(fake_api: FakeServer) -> Iterator[FakeServer]:
    """The session's fake API with no routes and no recorded requests."""
    fake_api.reset()
    yield fake_api
    fake_api.reset()


@pytest.fixture(scope="session")
def png() -> bytes:
    return png_bytes((200, 40, 40), (64, 48))


@pytest.fixture(scope="session")
def png_b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def encoded(fmt: str, color: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    return encoded("JPEG")


@pytest.fixture(scope="session")
def webp() -> bytes:
    return encoded("WEBP")
