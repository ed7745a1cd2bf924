"""The browser UI: page routes, templates, static ES modules and CSS, and the security headers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from flowstudio.web.routes import (
    WEB_DIR,
    SignInRequired,
    here,
    login_redirect,
    page_language,
    render,
)
from flowstudio.web.routes import router as pages_router
from flowstudio.web.security import SecurityHeadersMiddleware

__all__ = ["html_error_page", "install_web"]

STATIC_DIR = WEB_DIR / "static"


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "translated later"
    """Marks a message for the catalogue; it is translated where it is shown."""
    return message


_ERROR_TITLES = {
    400: N_("That request did not work"),
    403: N_("You can't open this"),
    404: N_("Nothing here"),
    405: N_("That doesn't work here"),
    409: N_("That conflicts with the current state"),
    413: N_("That is too large"),
    422: N_("That request is not valid"),
    429: N_("Slow down a little"),
    500: N_("Something went wrong"),
    503: N_("FlowStudio is not ready"),
}

_ERROR_HINTS = {
    403: N_("If you think you should have access, sign in with the account that owns it."),
    404: N_("The page or item may have been deleted, or it belongs to another account."),
    429: N_("Wait a moment, then try again."),
    500: N_(
        "The error has been logged. Try again in a moment; if it keeps happening, "
        "tell the administrator of this server."
    ),
    503: N_("The server is starting or its database is unavailable. Try again in a moment."),
}


class PackageStaticFiles(StaticFiles):
    """Static assets from the package; browsers revalidate them (ETag) so upgrades show at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


async def html_error_page(request: Request, status: int, code: str, detail: str) -> Response:
    """A friendly error page for browser requests; a 401 sends the visitor to sign in."""
    if status == 401:
        return login_redirect(here(request))
    # The problem's detail is English: other languages show the status's own title and hint.
    english = page_language(request, None) == "en"
    return render(
        request,
        "error.html",
        status_code=status,
        status=status,
        code=code,
        title=_ERROR_TITLES.get(status, _ERROR_TITLES[500]),
        detail=detail if english else "",
        hint=_ERROR_HINTS.get(status, ""),
    )


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return login_redirect(exc.next_url)


def install_web(app: FastAPI) -> None:
    """Pages, /static and the security-headers middleware on ``app``."""
    app.include_router(pages_router)
    app.mount("/static", PackageStaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_middleware(SecurityHeadersMiddleware)
