"""The status page: static files shipped in the package, served by every node at ``/`` and
``/ui`` (assets under ``/ui/``). No CDN, no build step: ``index.html``, ``app.js`` and
``style.css`` are what the browser gets. The page reads ``/v1/status`` (gateway/status.py)
every few seconds.

The files hold nothing about the pool, so they are served to anyone, whatever ``--auth``
says; the pool's facts are in ``/v1/status``, which the auth gate treats as ``/v1/models``.
Files are read once, at the first request, and kept (they are a few kilobytes).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
HEADERS = {
    # The page loads its own script and style and talks to its own node, nothing else.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a node upgrade changes the files
}
PUBLIC_PATHS = ("/", "/ui", "/ui/")
"""Paths of the page itself; ``/ui/<asset>`` too (see :func:`is_page`)."""


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the page's static files (open to anyone)."""
    return path in PUBLIC_PATHS or (path.startswith("/ui/") and path[4:] in ASSETS)


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def add_ui_routes(app: web.Application) -> None:
    """``GET /`` and ``GET /ui``: the page; ``/ui/`` redirects to ``/ui`` (the page's relative
    links resolve the same from ``/`` and ``/ui``, so it also works behind a path prefix);
    ``GET /ui/<asset>``: its script and style."""
    cache: dict[str, bytes] = {}

    def body(name: str) -> bytes:
        if name not in cache:
            cache[name] = _read(name)
        return cache[name]

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body("index.html"), content_type="text/html", headers=HEADERS)

    async def slash(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = ASSETS.get(name)
        if kind is None or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=body(name), content_type=kind, charset="utf-8", headers=HEADERS)

    app.router.add_get("/", page)
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/", slash)
    app.router.add_get("/ui/{name}", asset)
