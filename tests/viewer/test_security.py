"""Security tests of harness/viewer: Host and Origin checks, CSRF, the token, headers, escaping."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import urlencode

import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient
from viewer_testkit import (
    BASE_URL,
    MODEL,
    XSS_CASE,
    XSS_MARKERS,
    ViewerStore,
    annotate,
    case_path,
    csrf_of,
    make_client,
)

from harness.errors import ConfigError
from harness.viewer import ViewerConfig, create_app
from harness.viewer.security import CSP, Guard, GuardMiddleware, is_loopback

TRACE_LINK = re.compile(r'href="/traces/([0-9a-f]{32})"')


# --- Host and Origin ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8765",
        "127.0.0.1:9999",
        "localhost.evil.example:8765",
        "127.0.0.1",
        "",
        "127.0.0.1:8765.evil.example",
        "0.0.0.0:8765",
    ],
)
def test_a_foreign_host_header_is_refused(client: TestClient, host: str) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host."""
    response = client.get("/", headers={"host": host})
    assert response.status_code == 403
    assert response.headers["content-security-policy"] == CSP
    post = client.post("/runs/x/annotate", headers={"host": host, "origin": BASE_URL})
    assert post.status_code == 403


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"]
)
def test_loopback_names_with_the_bound_port_are_accepted(client: TestClient, host: str) -> None:
    assert client.get("/", headers={"host": host}).status_code == 200


def _form(client: TestClient, run_id: str) -> tuple[str, str]:
    csrf = csrf_of(client.get(case_path(run_id, "c008")).text)
    body = urlencode(
        {"csrf": csrf, "case": "c008", "model": MODEL, "epoch": "0", "label": "correct"}
    )
    return csrf, body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "http://evil.example"}, 403),
        ({"origin": "http://127.0.0.1:9999"}, 403),
        ({"origin": "https://127.0.0.1:8765"}, 403),
        ({"origin": "null"}, 403),
        ({}, 403),
        ({"referer": "http://evil.example/page"}, 403),
        ({"origin": BASE_URL, "sec-fetch-site": "cross-site"}, 403),
        ({"origin": BASE_URL}, 303),
        ({"origin": "http://localhost:8765"}, 303),
        ({"referer": f"{BASE_URL}/runs/x"}, 303),
        # Under Referrer-Policy no-referrer a browser's own form POST says Origin: null.
        ({"origin": "null", "sec-fetch-site": "same-origin"}, 303),
    ],
)
def test_a_post_must_come_from_the_viewers_own_pages(
    client: TestClient, viewer_store: ViewerStore, headers: dict[str, str], status: int
) -> None:
    run_id = viewer_store.runs["a"]
    _, body = _form(client, run_id)
    response = client.post(
        f"/runs/{run_id}/annotate",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
        follow_redirects=False,
    )
    assert response.status_code == status


def test_the_csrf_token_belongs_to_one_session(viewer_store: ViewerStore) -> None:
    run_id = viewer_store.runs["a"]
    with make_client(viewer_store) as first, make_client(viewer_store) as second:
        token = csrf_of(first.get(case_path(run_id, "c008")).text)
        second.get("/")  # a session of its own
        assert annotate(second, run_id, "c008", csrf=token).status_code == 403
        assert annotate(first, run_id, "c008", csrf=token).status_code == 303
        cookie = first.get("/").headers.get("set-cookie")
        assert cookie is None  # the session cookie is set once
    fresh = make_client(viewer_store).get("/").headers["set-cookie"]
    assert "HttpOnly" in fresh and "SameSite=Strict" in fresh


def test_only_get_head_and_post_are_served(client: TestClient) -> None:
    assert client.put("/", headers={"origin": BASE_URL}).status_code == 405
    assert client.delete("/runs/x").status_code == 405


# --- the token for non-loopback addresses ---------------------------------------------------------


def test_a_non_loopback_address_needs_a_token_or_an_explicit_opt_out(
    viewer_store: ViewerStore,
) -> None:
    with pytest.raises(ConfigError, match="token"):
        create_app(ViewerConfig(viewer_store.path, host="0.0.0.0"))
    with pytest.raises(ConfigError, match="token"):
        create_app(ViewerConfig(viewer_store.path, host="192.168.1.5"))
    create_app(ViewerConfig(viewer_store.path, host="0.0.0.0", unsafe_no_auth=True))
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_the_token_is_exchanged_once_for_a_strict_cookie(viewer_store: ViewerStore) -> None:
    token = "tok-" + "x" * 30
    base = "http://192.168.1.5:8765"
    with make_client(viewer_store, base_url=base, host="192.168.1.5", token=token) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and "token" in refused.text
        assert client.get("/", params={"token": "wrong"}).status_code == 401
        assert client.get(f"/runs/{viewer_store.runs['a']}").status_code == 401
        exchanged = client.get(
            "/", params={"token": token, "suite": "viewertest"}, follow_redirects=False
        )
        assert exchanged.status_code == 303
        assert exchanged.headers["location"] == "/?suite=viewertest"  # the token leaves the URL
        cookie = exchanged.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token in cookie
        assert client.get("/").status_code == 200  # the cookie now opens every page
        run_id = viewer_store.runs["a"]
        origin = {"origin": base}
        assert annotate(client, run_id, "c009", label="correct", headers=origin).status_code == 303
    with make_client(viewer_store, base_url=base, host="192.168.1.5", token=token) as other:
        assert other.get("/api/traces/" + "a" * 32 + "/spans/" + "b" * 16).status_code == 401


def test_the_token_redirect_stays_on_the_site() -> None:
    """A request for "//evil.example/?token=..." must not redirect to another site."""
    token = "t" * 32
    guard = Guard("192.168.1.5", 8765, token=token)
    middleware = GuardMiddleware(lambda scope, receive, send: None, guard)  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "//evil.example/",
        "query_string": f"token={token}".encode(),
        "headers": [(b"host", b"192.168.1.5:8765")],
    }
    response = middleware._check(scope, Headers(scope=scope), {})
    assert response is not None and response.headers["location"] == "/evil.example/"


def test_unsafe_no_auth_serves_without_a_token(viewer_store: ViewerStore) -> None:
    base = "http://192.168.1.5:8765"
    with make_client(viewer_store, base_url=base, host="192.168.1.5", unsafe_no_auth=True) as c:
        assert c.get("/").status_code == 200


def test_a_wildcard_bind_answers_only_to_loopback_and_named_hosts(
    viewer_store: ViewerStore,
) -> None:
    with make_client(
        viewer_store, host="0.0.0.0", token="t" * 32, allowed_hosts=("box.lan",)
    ) as client:
        assert client.get("/", headers={"host": "box.lan:8765"}).status_code == 401  # token next
        assert client.get("/", headers={"host": "other.lan:8765"}).status_code == 403


# --- headers --------------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    run_id = viewer_store.runs["a"]
    case = client.get(case_path(run_id, "c001"))
    trace_id = TRACE_LINK.findall(case.text)[0]
    span_id = re.findall(r'id="s-([0-9a-f]{16})"', client.get(f"/traces/{trace_id}").text)[0]
    responses = [
        client.get("/"),
        client.get(f"/runs/{run_id}"),
        case,
        client.get(f"/traces/{trace_id}"),
        client.get(f"/api/traces/{trace_id}/spans/{span_id}"),
        client.get("/static/viewer.css"),
        client.get("/nothing"),
        client.get("/", headers={"host": "evil.example:8765"}),
        client.post(f"/runs/{run_id}/annotate", headers={"origin": "http://evil.example"}),
        client.get("/compare", params={"base": run_id, "cand": viewer_store.runs["b"]}),
    ]
    for response in responses:
        headers = response.headers
        assert headers["content-security-policy"] == CSP, response.url
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert "frame-ancestors 'none'" in CSP and "form-action 'self'" in CSP


# --- the XSS corpus -----------------------------------------------------------------------------


class _Markup(HTMLParser):
    """Collects what a browser would treat as markup (not text) in a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag


def assert_inert(page: str, where: str) -> None:
    """No corpus markup survives: only our script, no handlers, no inline style, no js: URL."""
    for marker in XSS_MARKERS:
        assert marker not in page, f"{where}: raw {marker!r}"
    assert page.count("</textarea>") == page.count("<textarea"), where
    parser = _Markup()
    parser.feed(page)
    for tag, attrs in parser.tags:
        names = {name for name, _ in attrs}
        assert not any(name.startswith("on") for name in names), f"{where}: <{tag} {attrs}>"
        assert "style" not in names and "srcdoc" not in names, where
        assert tag not in ("img", "iframe", "object", "embed", "base", "i"), f"{where}: <{tag}>"
        if tag == "script":
            assert dict(attrs).get("src", "").startswith("/static/viewer.js"), where
        for name in ("href", "src", "action"):
            value = (dict(attrs).get(name) or "").strip().lower()
            assert not value.startswith(("javascript:", "data:text", "//", "http")), (where, value)


def test_the_xss_corpus_renders_as_text_everywhere(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    runs = viewer_store.runs
    xss_case = client.get(case_path(runs["a"], XSS_CASE))
    trace_ids = TRACE_LINK.findall(xss_case.text)
    python_case = client.get(case_path(runs["python"], "paris", model="-"))
    agent_case = client.get(case_path(runs["agent"], "paris"))
    trace_ids += TRACE_LINK.findall(python_case.text) + TRACE_LINK.findall(agent_case.text)
    pages = {
        "runs": client.get("/"),
        "run": client.get(f"/runs/{runs['a']}"),
        "run, sliced by tags": client.get(f"/runs/{runs['a']}", params={"slice": "tags"}),
        "run, filtered by the corpus": client.get(
            f"/runs/{runs['a']}", params={"q": "<script>", "by": "tags", "value": "<img src=x"}
        ),
        "xss case": xss_case,
        "python case": python_case,
        "agent case": agent_case,
        "compare": client.get("/compare", params={"base": runs["a"], "cand": runs["b"]}),
        **{f"trace {t}": client.get(f"/traces/{t}") for t in trace_ids},
    }
    assert len(trace_ids) == 3
    for where, response in pages.items():
        assert response.status_code == 200, where
        assert_inert(response.text, where)
    # The corpus is there, as text.
    assert "&lt;script&gt;window.__xss=1" in xss_case.text
    assert "&lt;/textarea&gt;&lt;script&gt;" in xss_case.text
    assert "&#34; onmouseover=&#34;window.__xss=5&#34;" in xss_case.text
    assert "&lt;script&gt;window.__xss=1" in python_case.text  # judge reply, chunks, output
    assert "&lt;img src=x" in pages["run, sliced by tags"].text  # a metadata slice value
    assert "xss&#34;&#39;&lt;i&gt;case&lt;/i&gt;" in pages["run"].text  # a case id


def test_span_attributes_with_the_corpus_come_as_json(
    client: TestClient, viewer_store: ViewerStore
) -> None:
    page = client.get(case_path(viewer_store.runs["python"], "paris", model="-")).text
    trace_id = TRACE_LINK.findall(page)[0]
    span_ids = re.findall(r'id="s-([0-9a-f]{16})"', client.get(f"/traces/{trace_id}").text)
    details = [client.get(f"/api/traces/{trace_id}/spans/{s}") for s in span_ids]
    root = next(d for d in details if "xss.value" in d.json()["attributes"])
    assert root.headers["content-type"] == "application/json"
    assert root.headers["x-content-type-options"] == "nosniff"
    assert "<script>window.__xss=1" in root.json()["attributes"]["xss.value"]
    assert any(key.startswith("xss.key.<img") for key in root.json()["attributes"])


def test_templates_never_mark_data_safe_or_inline_code(client: TestClient) -> None:
    viewer = client.app.state.viewer  # type: ignore[attr-defined]
    assert viewer.env.autoescape is True
    templates = resources.files("harness.viewer") / "templates"
    for item in templates.iterdir():
        text = item.read_text(encoding="utf-8")
        assert "|safe" not in text.replace(" ", "") and "Markup" not in text, item.name
        assert "autoescape" not in text and "tojson" not in text, item.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"{item.name}: inline script"
        assert not re.search(r"\sstyle=|\son[a-z]+=", text), f"{item.name}: inline style/handler"
    script = (resources.files("harness.viewer") / "static" / "viewer.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "eval(" not in script and "document.write" not in script


@pytest.mark.parametrize(
    "path",
    [
        "/traces/..%2F..%2Fetc%2Fpasswd",
        "/traces/ABCDEF",
        "/traces/" + "g" * 32,
        "/api/traces/" + "a" * 32 + "/spans/..%2F..",
        "/api/traces/x/spans/" + "b" * 16,
        "/static/%2E%2E%2Fapp.py",
        "/static/viewer.css%00.py",
        "/runs/%2E%2E",
        "/runs/a%2Fb",
    ],
)
def test_route_parameters_are_validated(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
