"""The published OpenAPI document: what FastAPI generates, made usable by client generators as
it stands. Every change to the document is made here, once, when it is first asked for:

- each operation has a short, stable id (`history_list`, `run_generate`, …) instead of the
  framework's path-derived one;
- error responses are RFC 9457 problem documents (`errors.declare_problem_responses`);
- uploaded files are `format: binary`, so generated clients send bytes, not text;
- the headers the API reads are declared as parameters: `X-CSRF-Token` on every unsafe
  operation (browser sessions need it; bearer tokens do not), `If-None-Match` on image reads.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from flowstudio.errors import declare_problem_responses

# Route function name -> operation id. Every API route must be here: a new one without an id
# fails the schema (and its test) instead of publishing a generated name.
OPERATION_IDS = {
    "healthz": "health_live",
    "readyz": "health_ready",
    "register": "auth_register",
    "login": "auth_login",
    "logout": "auth_logout",
    "me": "auth_me",
    "set_language": "auth_set_language",
    "list_tokens": "token_list",
    "create_token": "token_create",
    "revoke_token": "token_revoke",
    "list_flows": "flow_list",
    "get_flow": "flow_get",
    "start_run": "run_start",
    "list_runs": "run_list",
    "get_run": "run_get",
    "delete_run": "run_delete",
    "run_events": "run_events",
    "generate": "run_generate",
    "list_assets": "step_candidates",
    "upload_asset": "step_upload",
    "adopt": "step_adopt",
    "clear": "step_clear",
    "list_history": "history_list",
    "delete_many": "history_delete_many",
    "get_generation": "generation_get",
    "delete_generation": "generation_delete",
    "restore_generation": "generation_restore",
    "image": "generation_image",
    "thumbnail": "generation_thumbnail",
    "download": "generation_download",
}

_UNSAFE = {"post", "put", "patch", "delete"}
_NO_SESSION_YET = {"auth_register", "auth_login"}  # nothing to protect before signing in
_CONDITIONAL = {"generation_image", "generation_thumbnail", "generation_download"}

CSRF_HEADER = {
    "name": "X-CSRF-Token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": (
        "Required with the session cookie (the `csrf_token` from /api/auth/me); "
        "not used with a bearer token."
    ),
}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The ETag of a copy already held: 304 with no body when it is current.",
}


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function`."""
    if not route.include_in_schema:  # pages and the API's fallback: not published
        return f"{route.name}_{'_'.join(sorted(route.methods or ()))}".lower()
    try:
        return OPERATION_IDS[route.name]
    except KeyError:
        raise RuntimeError(
            f"the route {route.name!r} ({route.path}) has no operation id in "
            "flowstudio.openapi.OPERATION_IDS"
        ) from None


def refine(schema: dict[str, Any]) -> dict[str, Any]:
    declare_problem_responses(schema)
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            parameters = operation.setdefault("parameters", [])
            names = {p["name"].lower() for p in parameters}
            op_id = operation.get("operationId")
            if method in _UNSAFE and op_id not in _NO_SESSION_YET and "x-csrf-token" not in names:
                parameters.append(dict(CSRF_HEADER))
            if op_id in _CONDITIONAL and "if-none-match" not in names:
                parameters.append(dict(IF_NONE_MATCH))
            if not parameters:
                del operation["parameters"]
    for component in schema.get("components", {}).get("schemas", {}).values():
        for prop in component.get("properties", {}).values():
            # pydantic publishes bytes as a string with a media type; generators want binary.
            if prop.get("type") == "string" and "contentMediaType" in prop:
                prop["format"] = "binary"
    return schema


def install(app: FastAPI) -> None:
    """Refine the app's generated document once, the first time it is asked for."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
