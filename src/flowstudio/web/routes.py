"""Server-rendered pages: sign-in, flows and runs, the run page, history, by-run view, settings.

Pages read through the same services as the API; everything interactive is a small ES module in
static/ that talks to the JSON API with the session cookie and the CSRF token from the base
template's <meta name="csrf-token">.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from flowstudio.auth.service import Principal
from flowstudio.deps import OptionalPrincipal, SessionDep
from flowstudio.errors import InvalidCursor, NotFound
from flowstudio.i18n import locales
from flowstudio.runs import service as runs_service

WEB_DIR = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=WEB_DIR / "templates")
TEMPLATES.env.add_extension("jinja2.ext.i18n")
TEMPLATES.env.install_gettext_callables(  # type: ignore[attr-defined]
    locales.gettext, locales.ngettext, newstyle=True
)
# Content that the catalogue may translate (the bundled flows' texts, error titles): looked up,
# never formatted, and escaped like any other value.
TEMPLATES.env.filters["tr"] = lambda text: locales.gettext(text) if text else text
TEMPLATES.env.filters["datetime"] = locales.format_time
TEMPLATES.env.filters["number"] = locales.format_number

router = APIRouter(include_in_schema=False)

# Pages show per-user data: never cache them in shared caches, always revalidate in the browser.
NO_STORE = {"Cache-Control": "no-store"}
RECENT_RUNS = 12
RUNS_PER_PAGE = 10


class SignInRequired(Exception):
    """A page was asked for without a session; the handler redirects to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def safe_next(value: str | None, default: str = "/") -> str:
    """Only local paths: never an absolute URL, a scheme-relative `//host`, or a backslash trick."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if value.startswith(("/login", "/register")):
        return default
    return value


def here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def login_redirect(next_url: str) -> RedirectResponse:
    target = "/login"
    if next_url and next_url != "/":
        target += "?next=" + quote(next_url, safe="/")
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


async def page_principal(request: Request, principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise SignInRequired(here(request))
    return principal


PagePrincipal = Annotated[Principal, Depends(page_principal, scope="function")]


def page_language(request: Request, principal: Principal | None) -> str:
    """The cookie (the header's picker), else the account's language, else Accept-Language."""
    return locales.of_request(request, principal.user.language if principal else None)


def _embedded_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no "<" can close the element."""
    return Markup(
        json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render(
    request: Request,
    template: str,
    *,
    principal: Principal | None = None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    csrf_token = None
    if principal is not None:
        csrf_token = request.app.state.ctx.auth.csrf_token(principal)
    language = page_language(request, principal)
    catalogue = locales.js_catalogue(language)
    with locales.using(language):  # the template renders here, in the page's language
        response = TEMPLATES.TemplateResponse(
            request,
            template,
            {
                "user": principal.user if principal else None,
                "csrf_token": csrf_token,
                "nav": request.url.path,
                "lang": language,
                "languages": list(locales.LANGUAGES.values()),
                "js_catalogue": _embedded_json(catalogue) if catalogue else "",
                **context,
            },
            status_code=status_code,
            headers={**NO_STORE, "Content-Language": language},
        )
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


def _translated_input(spec: dict[str, Any]) -> dict[str, Any]:
    for key in ("label", "placeholder", "help"):
        if isinstance(spec.get(key), str) and spec[key]:
            spec[key] = locales.gettext(spec[key])
    return spec


def flows_for_page(request: Request, principal: Principal | None) -> list[dict[str, Any]]:
    """The flows, their texts in the page's language (the bundled flows' are in the catalogue;
    others show as written)."""
    flows = []
    with locales.using(page_language(request, principal)):
        for flow in request.app.state.ctx.flows.all():
            flows.append(
                {
                    "slug": flow.slug,
                    "title": locales.gettext(flow.title),
                    "description": locales.gettext(flow.description) if flow.description else "",
                    "inputs": [_translated_input(i.model_dump()) for i in flow.inputs],
                    "steps": [
                        {"id": s.id, "title": locales.gettext(s.title), "kind": s.kind}
                        for s in flow.steps
                    ],
                }
            )
    return flows


def _translated_run(request: Request, principal: Principal, run: dict[str, Any]) -> dict[str, Any]:
    """A described run with its flow's and steps' titles in the page's language."""
    with locales.using(page_language(request, principal)):
        for key in ("flow_title",):
            if isinstance(run.get(key), str):
                run[key] = locales.gettext(run[key])
        for step in run.get("steps", []):
            if isinstance(step.get("title"), str):
                step["title"] = locales.gettext(step["title"])
    return run


# -- signing in ---------------------------------------------------------------------------------


@router.get("/login")
async def login_page(
    request: Request, principal: OptionalPrincipal, next: str | None = Query(None, max_length=2000)
) -> Response:
    target = safe_next(next)
    if principal is not None:
        return RedirectResponse(target, status_code=303, headers=NO_STORE)
    registration_open = request.app.state.ctx.auth.registration_open
    return render(
        request, "auth.html", mode="login", next_url=target, registration_open=registration_open
    )


@router.get("/register")
async def register_page(
    request: Request, principal: OptionalPrincipal, next: str | None = Query(None, max_length=2000)
) -> Response:
    target = safe_next(next)
    if principal is not None:
        return RedirectResponse(target, status_code=303, headers=NO_STORE)
    registration_open = request.app.state.ctx.auth.registration_open
    return render(
        request, "auth.html", mode="register", next_url=target, registration_open=registration_open
    )


# -- flows and runs -----------------------------------------------------------------------------


@router.get("/")
async def home_page(request: Request, principal: PagePrincipal, db: SessionDep) -> Response:
    ctx = request.app.state.ctx
    runs, next_cursor = await runs_service.list_runs(
        db, user=principal.user, codec=ctx.cursors, cursor=None, limit=RECENT_RUNS
    )
    return render(
        request,
        "home.html",
        principal=principal,
        flows=flows_for_page(request, principal),
        runs=[_translated_run(request, principal, run.model_dump(mode="json")) for run in runs],
        more_runs=next_cursor is not None,
    )


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"No such {what}.") from None


@router.get("/runs/{run_id}")
async def run_page(
    run_id: str, request: Request, principal: PagePrincipal, db: SessionDep
) -> Response:
    run = await runs_service.get_owned_run(
        db, user=principal.user, run_id=parse_uuid(run_id, "run")
    )
    [described] = await runs_service.describe_runs(db, [run])
    run_data = _translated_run(request, principal, described.model_dump(mode="json"))
    return render(request, "run.html", principal=principal, run=run_data)


# -- history ------------------------------------------------------------------------------------


@router.get("/history")
async def history_page(request: Request, principal: PagePrincipal) -> Response:
    return render(
        request, "history.html", principal=principal, flows=flows_for_page(request, principal)
    )


@router.get("/history/runs")
async def history_by_run_page(
    request: Request,
    principal: PagePrincipal,
    db: SessionDep,
    cursor: str | None = Query(None, max_length=512),
    flow: str | None = Query(None, max_length=64),
) -> Response:
    ctx = request.app.state.ctx
    try:
        runs, next_cursor = await runs_service.list_runs(
            db,
            user=principal.user,
            codec=ctx.cursors,
            cursor=cursor or None,
            limit=RUNS_PER_PAGE,
            flow_slug=flow or None,
        )
    except InvalidCursor:
        return RedirectResponse(request.url.path, status_code=303, headers=NO_STORE)
    return render(
        request,
        "history_runs.html",
        principal=principal,
        runs=[_translated_run(request, principal, run.model_dump(mode="json")) for run in runs],
        next_cursor=next_cursor,
        first_page=cursor is None,
        flow=flow or "",
        flows=flows_for_page(request, principal),
    )


# -- settings -----------------------------------------------------------------------------------


@router.get("/settings")
async def settings_page(request: Request, principal: PagePrincipal) -> Response:
    return render(request, "settings.html", principal=principal)
