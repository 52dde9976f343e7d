"""The investigation UI: one ASGI app serving the pages and their JSON twins.

Every view is declared once in ``VIEWS`` (its path, its parameters, its function). Its
page (``/timeline``) is one static HTML shell whose script fetches the JSON twin at the
same path (``/timeline.json``) with the same query string and draws it: the server
renders nothing the API does not serve, and a URL pasted into a ticket opens the same
view. The app only reads: GET and HEAD, a store opened read-only (or through a
recorder's query socket), no route that writes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from forensix.analysis.sessions import find_session
from forensix.errors import ForensixError, StoreError, UsageError
from forensix.model.identity import parse_entity
from forensix.store.base import Reader
from forensix.store.open import is_remote
from forensix.web import views_events as ev
from forensix.web import views_incident as inc
from forensix.web import views_overview as ov
from forensix.web import views_people as pp
from forensix.web import views_terminal as vt
from forensix.web.context import IDLE_S, Context, ReopeningReader
from forensix.web.params import ApiError, NotFound, Param, read_params

__all__ = ["VENDOR", "VIEWS", "View", "create_app", "stop_streams"]

log = logging.getLogger("forensix.web")
HERE = Path(__file__).parent
STATIC = HERE / "static"
NODE_MODULES = HERE / "node_modules"

# The browser libraries, as npm installs them (package.json / package-lock.json beside this file).
VENDOR = {
    "cytoscape.min.js": "cytoscape/dist/cytoscape.min.js",
    "dagre.min.js": "dagre/dist/dagre.min.js",
    "cytoscape-dagre.js": "cytoscape-dagre/cytoscape-dagre.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "asciinema-player.min.js": "asciinema-player/dist/bundle/asciinema-player.min.js",
    "asciinema-player.css": "asciinema-player/dist/bundle/asciinema-player.css",
}


@dataclass(frozen=True)
class View:
    name: str
    path: str  # without .json; may hold one {param}
    params: tuple[Param, ...]
    fn: Callable[..., dict[str, Any]]
    page: bool = True  # has an HTML page (live.json and graph.json are API only)


VIEWS = [
    View("overview", "/overview", ov.OVERVIEW, ov.overview),
    View("alerts", "/alerts", ov.ALERTS, ov.alerts),
    View("incident", "/incident", inc.INCIDENT, inc.incident),
    View("sessions", "/sessions", pp.SESSIONS, pp.session_list),
    View("session", "/session/{sid}", pp.SESSION, pp.session),
    View("process", "/process/{eid}", pp.PROCESS, pp.process),
    View("tree", "/tree", pp.TREE, pp.tree_at),
    View("timeline", "/timeline", ev.TIMELINE, ev.timeline_view),
    View("file", "/file", ev.FILE, ev.file_view),
    View("search", "/search", ov.SEARCH, ov.search),
    View("graph", "/graph", inc.GRAPH, inc.graph, page=False),
    View("live", "/live", ov.LIVE, ov.live, page=False),
]

_MAX_URL = 4096


def _error(status: int, message: str, hint: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint, "status": status}, status_code=status)


def _json_endpoint(ctx: Context, view: View) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if len(str(request.url)) > _MAX_URL:
            return _error(414, "the URL is too long", f"at most {_MAX_URL} characters")
        t0 = time.perf_counter()
        try:
            p = read_params(request.query_params.multi_items(), view.params)
            data = await run_in_threadpool(view.fn, ctx, p, **request.path_params)
        except ApiError as e:
            return _error(e.status, e.message, e.hint)
        except StoreError as e:
            return _error(503, e.message, e.hint)
        except ForensixError as e:  # a value the analysis refused (UsageError): the request's fault
            return _error(400, e.message, e.hint)
        except Exception:
            log.exception("view %s failed", view.name)
            return _error(500, f"the {view.name} view failed on this store", "see the server's log")
        resp = JSONResponse(data, headers={"Cache-Control": "no-store"})
        log.info("%s %.3f s %d bytes", request.url.path, time.perf_counter() - t0, len(resp.body))
        return resp
    return endpoint


def _cast_endpoint(ctx: Context, kind: str) -> Callable[[Request], Awaitable[Response]]:
    """A session's (``kind`` session) or a process's terminal as asciicast v2: what the
    embedded player plays, and what "download" saves (as `forensix replay --format asciicast`)."""

    def build(text: str) -> str:
        if kind == "session":
            try:
                leader, _ = find_session(ctx.reader, text, ctx.attribution())
            except UsageError as e:
                raise NotFound(e.message, e.hint) from None
        else:
            leader = parse_entity(text)
        return vt.terminal_cast(vt.recording(ctx, leader))

    async def endpoint(request: Request) -> Response:
        ident = request.path_params["ident"]
        try:
            body = await run_in_threadpool(build, ident)
        except ApiError as e:
            return _error(e.status, e.message, e.hint)
        except StoreError as e:
            return _error(503, e.message, e.hint)
        except ForensixError as e:
            return _error(400, e.message, e.hint)
        except Exception:
            log.exception("the %s terminal failed", kind)
            return _error(500, f"the {kind}'s terminal failed on this store", "see the server's log")
        return Response(body, media_type="application/x-asciicast", headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'inline; filename="{kind}-{ident[:40]}.cast"'})
    return endpoint


LIVE_EVERY = 1.0  # seconds between the live stream's looks at the store
LIVE_HEARTBEAT = 15.0  # a comment line at least this often: proxies close silent connections


def _live_stream(ctx: Context) -> Callable[[Request], Awaitable[Response]]:
    """``/live/stream``: what ``/live.json`` answers, pushed as server-sent events when
    anything arrived (the first at once, as the cursor), instead of the page asking every
    2 s. The page falls back to asking when its browser or a proxy cannot hold the stream."""

    async def endpoint(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            since: dict[str, Any] = {"events": None, "alerts": None}
            silent = 0.0
            while not request.app.state.stopping and not await request.is_disconnected():
                try:
                    # a store let go and untouched since: nothing new, and no reopen to find that out
                    quiet = since["events"] is not None and ctx.unchanged()
                    d = None if quiet else await run_in_threadpool(ov.live, ctx, since)
                except ForensixError as e:  # the store went away for a moment: say so, look again
                    yield f"event: failed\ndata: {json.dumps({'error': e.message, 'hint': e.hint})}\n\n"
                    d = None
                except Exception:
                    log.exception("the live stream failed")
                    yield f"event: failed\ndata: {json.dumps({'error': 'the live view failed on this store'})}\n\n"
                    d = None
                if d is not None and (since["events"] is None or d["new_events"] or d["new_alerts"]):
                    yield f"data: {json.dumps(d)}\n\n"
                    silent = 0.0
                elif silent >= LIVE_HEARTBEAT:
                    yield ": nothing new\n\n"
                    silent = 0.0
                if d is not None:
                    since = {"events": d["events"], "alerts": d["alerts"]}
                await asyncio.sleep(LIVE_EVERY)
                silent += LIVE_EVERY

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return endpoint


def stop_streams(app: Starlette) -> None:
    """End the live streams (within LIVE_EVERY): the server is stopping, and would wait for them."""
    app.state.stopping = True


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ("app.js", "app.css", "favicon.svg"):
        return _error(404, f"no static file {name[:60]!r}", None)
    return FileResponse(STATIC / name)


async def _vendor(request: Request) -> Response:
    name = request.path_params["name"]
    rel = VENDOR.get(name)
    if rel is None:
        return _error(404, f"no browser library {name[:60]!r}", None)
    f = NODE_MODULES / rel
    if not f.is_file():
        return _error(503, f"the browser library {name} is not installed",
                      "run scripts/setup.sh (it runs npm ci in src/forensix/web)")
    return FileResponse(f, headers={"Cache-Control": "max-age=3600"})


async def _root(request: Request) -> Response:
    return RedirectResponse("/overview")


class _Guard(BaseHTTPMiddleware):
    """Read-only and, when a token is set, authenticated: a bearer header, or the cookie a
    first visit with ?token= sets (so a pasted URL works once in a browser)."""

    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _error(405, f"{request.method} is not allowed: the UI only reads", "use GET")
        if self.token is not None:
            given = request.query_params.get("token")
            auth = request.headers.get("authorization", "")
            ok = any(hmac.compare_digest(x.encode(), self.token.encode()) for x in (
                auth.removeprefix("Bearer ").strip(), request.cookies.get("fx_token", ""), given or "") if x)
            if not ok:
                return _error(401, "this forensix UI needs its token",
                              "open the URL `forensix ui` printed (with ?token=...), or send Authorization: Bearer")
            if given:  # keep it in a cookie and take it out of the address bar (and of tickets)
                url = request.url.remove_query_params("token")
                resp: Response = RedirectResponse(str(url), status_code=303)
                resp.set_cookie("fx_token", self.token, httponly=True, secure=request.url.scheme == "https",
                                samesite="strict")
                return resp
        resp = await call_next(request)
        # wasm-unsafe-eval: the terminal player's emulator is WebAssembly (script eval stays refused)
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp


def create_app(opener: Callable[[], Reader], store: str, *, token: str | None = None,
               idle_s: float = IDLE_S) -> Starlette:
    """The UI over the store ``opener`` opens (``store.embedded.open_reader`` through
    ``cli.options``: a file, a recorder's query socket, a fleet store); opened again when a
    recording that held it ends; a DuckDB file is let go after ``idle_s`` without a query,
    so that a recording can start on it."""
    watch = None if is_remote(store) else Path(store)
    ctx = Context(reader=ReopeningReader(opener, watch, idle_s), store=store)
    routes: list[BaseRoute] = [Route("/", _root)]
    # the asciicast twins of a session's and a process's terminal, before the pages that take any id
    routes.append(Route("/live/stream", _live_stream(ctx), methods=["GET"]))
    routes += [Route("/session/{ident}.cast", _cast_endpoint(ctx, "session"), methods=["GET"]),
               Route("/process/{ident}.cast", _cast_endpoint(ctx, "process"), methods=["GET"])]
    for v in VIEWS:  # the .json route first: "/session/{sid}" would take "x.json" as the id
        routes.append(Route(v.path + ".json", _json_endpoint(ctx, v), methods=["GET"], name=v.name + "-json"))
        if v.page:
            routes.append(Route(v.path, _page, methods=["GET"], name=v.name))
    routes += [Route("/static/vendor/{name}", _vendor), Route("/static/{name}", _static)]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no view at {request.url.path[:100]}", "start at /overview")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("request failed", exc_info=exc)
        return PlainTextResponse("internal error", status_code=500)

    app = Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)],
                    exception_handlers={404: not_found, 500: server_error})
    app.state.stopping = False
    return app
