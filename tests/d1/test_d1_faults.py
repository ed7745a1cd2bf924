"""D1 out of reach, or answering 5xx / 429: the API answers 503 with Retry-After, as it does
when SQLite or PostgreSQL cannot be reached, and the API token shows nowhere."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from flowstudio.app import create_app
from flowstudio.config import Settings
from tests.fixtures.app import FAST_HASHING, make_client

TOKEN = "d1-token-that-must-never-show-0123456789"


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "7")
        body = b'{"success": false, "errors": [{"code": 7500, "message": "overloaded"}]}'
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[503, 429, "unreachable"])
def d1_api_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "unreachable":
        yield "http://127.0.0.1:9/client/v4"  # the discard port: nothing answers
        return
    handler = type("Handler", (_Answer,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/client/v4"
    server.shutdown()
    server.server_close()


async def test_an_unanswering_d1_is_a_503_that_names_no_token(tmp_path, d1_api_url, caplog):
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        database_url="d1://account/database",
        d1_api_token=TOKEN,
        d1_api_url=d1_api_url,
        secret_key="test-secret-key-that-is-long-enough",
        **FAST_HASHING,
    )
    app = create_app(settings, run_worker=False)
    async with app.router.lifespan_context(app), make_client(app) as client:
        response = await client.post(
            "/api/auth/register",
            json={"email": "someone@example.com", "password": "correct horse battery"},
        )
        ready = await client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"]
    assert ready.status_code == 503
    for text in (response.text, ready.text, caplog.text):
        assert TOKEN not in text
