"""Signing in to a dashboard behind access control: the form, the session cookie, refusals.

A browser cannot add an ``Authorization`` header to a page load, so the dashboard offers
``GET /login`` (a form with no script) and ``POST /login``: a token allowed ``dashboard.view``
becomes the :data:`~fedfort.monitoring.serving.SESSION_COOKIE`, ``HttpOnly`` (no script can
read it), ``SameSite=Strict`` (no other site can make the browser send it) and ``Secure`` over
HTTPS (OWASP Session Management Cheat Sheet). Every sign-in attempt is an audited decision.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs

from fedfort.monitoring.guarding import GuardDecision, RequestGuard
from fedfort.monitoring.serving import SESSION_COOKIE

__all__ = ["LOGIN_PAGE", "PUBLIC_ROUTES", "SESSION_S", "login", "refusal", "session_cookie"]

#: how long a dashboard session cookie lives (the token's own expiry still applies)
SESSION_S: Final = 12 * 3600
#: routes a guarded dashboard answers without a credential
PUBLIC_ROUTES: Final = frozenset({"/healthz", "/favicon.ico", "/login", "/logout"})
#: the sign-in form (no script; its CSP allows only a same-origin form post)
LOGIN_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedfort dashboard: sign in</title></head>
<body><h1>fedfort dashboard</h1>
<form method="post" action="/login">
<label>Access token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Sign in</button></form>
<p>Ask an administrator for a token (<code>fedfort access token issue --role viewer</code>).</p>
</body></html>
"""


def session_cookie(value: str, *, max_age: int, secure: bool) -> tuple[str, str]:
    """The ``Set-Cookie`` header holding ``value`` (empty with ``max_age=0`` signs out)."""
    flags = "; Secure" if secure else ""
    return (
        "Set-Cookie",
        f"{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{flags}",
    )


def login(guard: RequestGuard, form: bytes, remote: str) -> tuple[GuardDecision, str]:
    """The audited decision on a posted sign-in form, and the token it carried."""
    fields = parse_qs(form.decode("utf-8", "replace"))
    token = (fields.get("token") or [""])[0].strip()
    decision = guard.check(
        "dashboard.view", authorization=f"Bearer {token}" if token else None, remote=remote
    )
    return decision, token


def refusal(
    decision: GuardDecision, path: str, method: str
) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    """``(status, body, headers)`` refusing a request: a browser's page load without a
    credential goes to the sign-in form, everything else gets 401 or 403."""
    if decision.status == 401 and path == "/" and method == "GET":
        return 303, b"", (("Location", "/login"),)
    headers = (("WWW-Authenticate", 'Bearer realm="fedfort"'),) if decision.status == 401 else ()
    return decision.status, f"{decision.reason}\n".encode(), headers
