"""What the published OpenAPI document promises client generators (a generated client
must work as published): short stable operation ids, binary uploads, always-sent fields
required, and the headers the API reads declared as parameters."""

from __future__ import annotations

from flowstudio.openapi import OPERATION_IDS


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


async def test_operation_ids_are_short_stable_and_unique(app):
    schema = app.openapi()
    ids = [op["operationId"] for _, _, op in _operations(schema)]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(OPERATION_IDS.values())
    by_path = {(m, p): op["operationId"] for p, m, op in _operations(schema)}
    assert by_path[("get", "/api/history")] == "history_list"
    assert by_path[("post", "/api/runs/{run_id}/steps/{step_id}/generate")] == "run_generate"
    assert all(op.get("tags") for _, _, op in _operations(schema))


async def test_uploads_are_binary(app):
    schema = app.openapi()
    upload = schema["paths"]["/api/runs/{run_id}/steps/{step_id}/assets"]["post"]
    ref = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert body["properties"]["file"]["format"] == "binary"


async def test_always_sent_fields_are_required(app):
    components = app.openapi()["components"]["schemas"]
    for model, field in [
        ("ClearResult", "adopted_generation_id"),
        ("FlowList", "next_cursor"),
        ("TokenList", "next_cursor"),
        ("HistoryItem", "purge_after"),
        ("Problem", "instance"),
    ]:
        assert field in components[model]["required"], (model, field)


async def test_headers_the_api_reads_are_parameters(app):
    for path, method, operation in _operations(app.openapi()):
        names = {p["name"] for p in operation.get("parameters", [])}
        unsafe = method in ("post", "put", "patch", "delete")
        if unsafe and operation["operationId"] not in ("auth_register", "auth_login"):
            assert "X-CSRF-Token" in names, (method, path)
        if path.endswith(("/image", "/thumbnail", "/download")):
            assert "If-None-Match" in names, path
