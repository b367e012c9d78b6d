"""The viewer's web app: routes over the run and span stores, behind the security middleware.

Starlette with server-rendered Jinja2 pages (autoescape on everywhere) and one small script.
Handlers validate their parameters, call `queries`, `runstats`, `traceview`, `compareview` and
`harness.annotations` (they hold no SQL), and render. Nothing from the stores is ever marked
safe; a span's attributes reach the page only as JSON from `/api/...`, shown with textContent.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from harness import annotations as annotation_store
from harness.errors import ConfigError, HarnessError
from harness.summary import wilson_interval
from harness.viewer import queries, runstats, traceview
from harness.viewer.format import FILTERS
from harness.viewer.security import Guard, GuardMiddleware, is_loopback

MAX_FORM_BYTES = 64 * 1024
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass
class ViewerConfig:
    """How the viewer is served: the store, the bound address, who annotates, the token."""

    store_path: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    unsafe_no_auth: bool = False
    author: str = "unknown"
    allowed_hosts: tuple[str, ...] = ()


class Viewer:
    """The app's state (store, templates, guard) and its route handlers."""

    def __init__(self, config: ViewerConfig) -> None:
        if not is_loopback(config.host) and not config.token and not config.unsafe_no_auth:
            raise ConfigError(
                f"binding {config.host} exposes the viewer to the network: it needs a token "
                "(evals view makes one), or --unsafe-no-auth"
            )
        self.config = config
        self.db = queries.Database(config.store_path)
        self.guard = Guard(
            config.host, config.port, token=config.token, extra_hosts=config.allowed_hosts
        )
        package = resources.files("harness.viewer")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(package / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(FILTERS)
        self.env.globals.update(run_url=run_url, case_url=case_url, store=str(config.store_path))
        self.static = {
            item.name: item.read_bytes()
            for item in (package / "static").iterdir()
            if Path(item.name).suffix in STATIC_TYPES
        }
        threading.Thread(target=self._warm_up, daemon=True).start()
        # Asset URLs carry a content hash, so a cached stylesheet never outlives an upgrade.
        digest = hashlib.sha256(b"".join(self.static[k] for k in sorted(self.static)))
        self.env.globals["asset_version"] = digest.hexdigest()[:10]

    def _warm_up(self) -> None:
        """Import scipy (Wilson intervals) and compile the templates before a page asks."""
        wilson_interval(1, 2)
        for name in self.env.list_templates():
            self.env.get_template(name)

    # --- rendering helpers ----------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        session = request.scope.get("state", {}).get("session", "")
        html = self.env.get_template(name).render(
            csrf=self.guard.csrf_token(session), path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status)

    def run_or_404(self, run_id: str) -> dict[str, Any]:
        run = queries.get_run(self.db.conn(), run_id) if queries.RUN_ID.match(run_id) else None
        if run is None:
            raise HTTPException(404, f"no run {run_id!r} in this store")
        return run

    # --- pages ----------------------------------------------------------------------------
    def runs_page(self, request: Request) -> Response:
        suite = request.query_params.get("suite") or None
        conn = self.db.conn()
        return self.render(
            request,
            "runs.html",
            runs=queries.list_runs(conn, suite=suite, limit=200),
            suites=queries.suites(conn),
            suite=suite,
        )

    def run_page(self, request: Request) -> Response:
        run = self.run_or_404(request.path_params["run_id"])
        params = dict(request.query_params)
        query = queries.CaseFilter.from_query(params)
        conn = self.db.conn()
        fields = runstats.slice_fields(conn, run["id"])
        by = params.get("slice") or (fields[0] if fields else None)
        page = queries.case_page(conn, run["id"], query)
        queries.attach_labels(self.db.store(), run["id"], page)
        metrics = runstats.run_metrics(conn, run["id"], run["summary"])
        models, scorers = runstats.names(metrics)
        return self.render(
            request,
            "run.html",
            run=run,
            metrics=metrics,
            counts=runstats.verdict_counts(conn, run["id"]),
            fields=fields,
            slice_by=by if by in fields else None,
            slices=runstats.slice_table(conn, run["id"], by) if by in fields else [],
            page=page,
            query=query,
            params=params,
            models=models,
            scorers=scorers,
            others=queries.list_runs(conn, suite=run["suite"], limit=50),
            page_url=lambda **changes: _with_params(request, changes),
        )

    def case_page(self, request: Request) -> Response:
        run = self.run_or_404(request.path_params["run_id"])
        case_id, model, epoch = _result_key(dict(request.query_params))
        conn = self.db.conn()
        result = queries.get_result(conn, run["id"], case_id, model, epoch)
        if result is None:
            raise HTTPException(404, "no such result in this run")
        store = self.db.store()
        trace_id = result.trace_id
        return self.render(
            request,
            "case.html",
            run=run,
            result=result,
            siblings=queries.siblings(conn, run["id"], case_id),
            trace_found=bool(
                trace_id
                and traceview.TRACE_ID.match(trace_id)
                and traceview.trace_exists(conn, trace_id)
            ),
            history=annotation_store.history(store, run["id"], (case_id, model, epoch)),
            known_tags=annotation_store.known_tags(store),
            author=self.config.author,
        )

    async def annotate(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        session = request.scope.get("state", {}).get("session")
        if not self.guard.csrf_ok(session, (form.get("csrf") or [""])[-1]):
            raise HTTPException(403, "refused: the form's token is stale; reload the page")
        self.run_or_404(run_id)
        first = {key: values[-1] for key, values in form.items()}
        case_id, model, epoch = _result_key(first)
        label = first.get("label") or None
        tags = [t for value in form.get("tag", []) for t in value.split(",")]
        note = annotation_store.Annotation(
            run_id,
            case_id,
            model,
            epoch,
            label,
            tags,
            first.get("note", "").strip(),
            self.config.author,
            time.time(),
        )
        try:
            await asyncio.to_thread(self._save_annotation, note)
        except HarnessError as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse(case_url(run_id, case_id, model, epoch) + "#annotate", 303)

    def _save_annotation(self, note: annotation_store.Annotation) -> None:
        annotation_store.add_annotation(self.db.store(), note)  # this thread's own connection

    def trace_page(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        page = (
            traceview.load_trace(self.db.conn(), trace_id)
            if traceview.TRACE_ID.match(trace_id)
            else None
        )
        if page is None:
            raise HTTPException(404, "no such trace in this store")
        return self.render(request, "trace.html", trace=page)

    def span_json(self, request: Request) -> Response:
        trace_id, span_id = request.path_params["trace_id"], request.path_params["span_id"]
        detail = None
        if traceview.TRACE_ID.match(trace_id) and traceview.SPAN_ID.match(span_id):
            detail = traceview.span_detail(self.db.conn(), trace_id, span_id)
        if detail is None:
            return JSONResponse({"error": "no such span"}, status_code=404)
        return JSONResponse(detail)

    def compare_page(self, request: Request) -> Response:
        base_id = request.query_params.get("base", "")
        cand_id = request.query_params.get("cand", "")
        base, cand = self.run_or_404(base_id), self.run_or_404(cand_id)
        by = request.query_params.get("by") or None
        if by is not None and not runstats.FIELD_NAME.match(by):
            by = None
        # Imported here: harness.compare pulls in the config models (~0.5 s), which only this
        # page needs, and `evals view` should print its URL at once.
        from harness.viewer import compareview

        view = compareview.compare(self.db.store(), base, cand, by=by)
        return self.render(request, "compare.html", view=view, base=base, cand=cand, by=by)

    def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        content = self.static.get(name)
        if content is None:
            raise HTTPException(404, "no such file")
        return Response(
            content,
            media_type=STATIC_TYPES[Path(name).suffix],
            headers={"cache-control": "max-age=300"},
        )

    async def error_page(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        return self.render(request, "error.html", status, code=status, message=detail)


def _result_key(params: dict[str, str]) -> tuple[str, str, int]:
    """(case id, model, epoch) from query or form fields; 404 when malformed."""
    case_id, model = params.get("case", ""), params.get("model", "")
    try:
        epoch = int(params.get("epoch", ""))
    except ValueError:
        raise HTTPException(404, "a result is named by case, model and epoch") from None
    if not case_id or not model or not 0 <= epoch < 1_000_000:
        raise HTTPException(404, "a result is named by case, model and epoch")
    return case_id, model, epoch


def run_url(run_id: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"/runs/{quote(run_id, safe='')}" + (f"?{query}" if query else "")


def case_url(run_id: str, case_id: str, model: str, epoch: int) -> str:
    query = urlencode({"case": case_id, "model": model, "epoch": epoch})
    return f"/runs/{quote(run_id, safe='')}/case?{query}"


def _with_params(request: Request, changes: dict[str, Any]) -> str:
    params = dict(request.query_params)
    params.update({k: "" if v is None else str(v) for k, v in changes.items()})
    if "page" not in changes:
        params.pop("page", None)
    query = urlencode({k: v for k, v in params.items() if v != ""})
    return request.url.path + (f"?{query}" if query else "")


def create_app(config: ViewerConfig) -> Starlette:
    """The viewer as an ASGI app (ConfigError when the address needs a token and has none)."""
    viewer = Viewer(config)
    routes = [
        Route("/", viewer.runs_page),
        Route("/runs/{run_id}", viewer.run_page),
        Route("/runs/{run_id}/case", viewer.case_page),
        Route("/runs/{run_id}/annotate", viewer.annotate, methods=["POST"]),
        Route("/traces/{trace_id}", viewer.trace_page),
        Route("/api/traces/{trace_id}/spans/{span_id}", viewer.span_json),
        Route("/compare", viewer.compare_page),
        Route("/static/{name}", viewer.static_file),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=viewer.guard)],
        exception_handlers={HTTPException: viewer.error_page},
    )
    app.state.viewer = viewer
    return app
