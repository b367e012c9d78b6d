"""Browser tests of harness/viewer: Debian chromium driven by Playwright against a live server.

A user's path through the viewer (runs → failing cases → a case → its trace and a span's
attributes; compare two runs; annotate a case) and the XSS corpus planted by viewer_testkit:
no payload runs (a hook it would call, a sentinel it would set, dialogs, CSP violations) and
none became markup in the DOM.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from viewer_testkit import MODEL, XSS_CASE, ViewerStore, case_path

from harness import annotations as annotation_store
from harness.store import Store
from harness.viewer import ViewerConfig, create_app

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed (apt-get install -y chromium; .ci/run does)",
    ),
]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Records what an injected payload would trigger; runs before any page script.
SENTINEL = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""
LOADED = """() => {
  const panel = document.querySelector("#span-detail");
  return panel.querySelector("h2") !== null && !panel.textContent.includes("loading…");
}"""
# Every element's attributes that would run code or load something.
DOM_AUDIT = """() => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const value = attr.value.trim().toLowerCase();
      if (attr.name.startsWith("on") || attr.name === "style" || attr.name === "srcdoc"
          || (["href", "src", "action", "formaction"].includes(attr.name)
              && value.startsWith("javascript:"))) {
        found.push(el.tagName + " " + attr.name + "=" + attr.value);
      }
    }
  }
  for (const el of document.querySelectorAll("img, iframe, object, embed, base, i")) {
    found.push("element " + el.tagName);
  }
  for (const script of document.scripts) {
    if (!script.src.includes("/static/viewer.js")) found.push("script " + script.outerHTML);
  }
  return found;
}"""


@pytest.fixture(scope="module")
def live_url(viewer_store: ViewerStore) -> Iterator[str]:
    """The viewer served by uvicorn on a free loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = create_app(ViewerConfig(viewer_store.path, port=port, author="browser"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


class Watch:
    """A page plus what it reported: hook calls, dialogs, console errors."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.hook_calls: list[Any] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.expose_function("__xssHook", self._hook)
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _hook(self, value: Any) -> None:
        self.hook_calls.append(value)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_nothing_ran(self, where: str) -> None:
        page = self.page
        assert page.evaluate("typeof window.__xss") == "undefined", where
        assert page.evaluate("window.__cspViolations") == [], where
        assert page.evaluate(DOM_AUDIT) == [], where
        assert self.hook_calls == [] and self.dialogs == [], where
        assert self.errors == [], where


@pytest.fixture
def watch(browser: Any) -> Iterator[Watch]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(SENTINEL)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield Watch(page)
    context.close()


def test_from_a_run_to_its_failures_a_case_and_its_trace(
    watch: Watch, live_url: str, viewer_store: ViewerStore
) -> None:
    page = watch.page
    run_id = viewer_store.runs["b"]
    page.goto(live_url + "/")
    page.click(f'a[href="/runs/{run_id}"]')
    page.wait_for_url(f"**/runs/{run_id}")
    assert page.locator("table.metrics").first.is_visible()
    page.select_option('form.filters select[name="verdict"]', "fail")
    page.click('form.filters button[type="submit"]')
    page.wait_for_url(re.compile(r"verdict=fail"))
    classes = page.locator("table.cases tbody tr").evaluate_all(
        "rows => rows.map(r => r.className)"
    )
    assert classes and set(classes) == {"r-fail"}
    page.click('table.cases a:text-is("c003")')
    page.wait_for_url(re.compile(r"/case\?case=c003"))
    assert "a regressed answer" in page.locator("pre.output").inner_text()
    page.click("text=Open trace")
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}$"))
    rows = page.locator("table.waterfall tbody tr")
    assert rows.count() == 4  # case, chat, two scorers
    page.click('button.sn:text-is("chat fake-model")')
    panel = page.locator("#span-detail")
    panel.locator("dt", has_text="gen_ai.request.model").wait_for()
    assert "fake-model" in panel.inner_text()
    assert re.search(r"#s-[0-9a-f]{16}$", page.url)  # a link to this span
    page.click("table.waterfall tbody tr:first-child button.tog")
    assert rows.nth(1).is_hidden() and rows.nth(3).is_hidden()
    page.click("table.waterfall tbody tr:first-child button.tog")
    assert rows.nth(1).is_visible()
    watch.assert_nothing_ran("trace")


def test_compare_two_runs_picked_on_the_runs_page(
    watch: Watch, live_url: str, viewer_store: ViewerStore
) -> None:
    page = watch.page
    page.goto(live_url + "/")
    page.check(f'input[name="base"][value="{viewer_store.runs["a"]}"]')
    page.check(f'input[name="cand"][value="{viewer_store.runs["b"]}"]')
    page.click("text=Compare A → B")
    page.wait_for_url(re.compile(r"/compare\?"))
    regressed = page.locator("article.flip", has=page.locator('b.caseid:text-is("c003")'))
    assert regressed.locator(".pill").inner_text() == "regressed"
    assert regressed.locator("ins").first.inner_text() == "a regressed "
    improved = page.locator("article.flip", has=page.locator('b.caseid:text-is("c005")'))
    assert improved.locator("del").first.inner_text() == " extra"
    page.select_option('select[name="by"]', "difficulty")
    page.wait_for_url(re.compile(r"by=difficulty"))
    assert page.locator("text=difficulty=hard").count() > 0
    watch.assert_nothing_ran("compare")


def test_annotate_a_case_and_see_it_stored(
    watch: Watch, live_url: str, viewer_store: ViewerStore
) -> None:
    page = watch.page
    run_id = viewer_store.runs["a"]
    page.goto(live_url + case_path(run_id, "c006", epoch=1))
    page.check('input[name="label"][value="incorrect"]')
    page.fill('input[list="known-tags"]', "wrong-city, needs-context")
    page.fill('textarea[name="note"]', "The capital is not </textarea> this.")
    page.click("text=Save annotation")
    page.wait_for_url(re.compile(r"#annotate$"))
    history = page.locator("ul.history li").first
    assert "incorrect" in history.inner_text() and "wrong-city" in history.inner_text()
    assert "by browser" in history.inner_text()
    assert page.locator('input[name="label"][value="incorrect"]').is_checked()
    with Store.open(viewer_store.path, create=False) as store:
        saved = annotation_store.latest(store, run_id)[("c006", MODEL, 1)]
    assert saved.label == "incorrect" and saved.tags == ["wrong-city", "needs-context"]
    assert saved.note == "The capital is not </textarea> this." and saved.author == "browser"
    watch.assert_nothing_ran("annotate")


def test_the_xss_corpus_executes_nothing(
    watch: Watch, live_url: str, viewer_store: ViewerStore
) -> None:
    page = watch.page
    runs = viewer_store.runs
    pages = [
        "/",
        f"/runs/{runs['a']}",
        f"/runs/{runs['a']}?slice=tags",
        f"/runs/{runs['a']}?q=%3Cscript%3E",
        case_path(runs["a"], XSS_CASE),
        case_path(runs["python"], "paris", model="-"),
        case_path(runs["agent"], "paris"),
        f"/compare?base={runs['a']}&cand={runs['b']}",
    ]
    traces: list[str] = []
    for path in pages:
        page.goto(live_url + path)
        page.mouse.move(400, 300)  # would fire a smuggled onmouseover
        page.keyboard.press("Tab")  # would fire a smuggled onfocus
        watch.assert_nothing_ran(path)
        traces += [
            href
            for href in page.locator('a[href^="/traces/"]').evaluate_all(
                "links => links.map(a => a.getAttribute('href'))"
            )
            if href not in traces
        ]
    assert len(traces) == 3
    for trace in traces:
        page.goto(live_url + trace)
        for button in page.locator("button.sn").all():
            button.click()  # render every span's attributes (the corpus among them)
            page.wait_for_function(LOADED)
        watch.assert_nothing_ran(trace)
    # The python case's root span carries the corpus as an attribute value and key: as text.
    page.goto(live_url + case_path(runs["python"], "paris", model="-"))
    page.click("text=Open trace")
    panel = page.locator("#span-detail")
    page.click("table.waterfall tbody tr:first-child button.sn")
    panel.locator("dt", has_text="xss.value").wait_for()
    assert "<script>window.__xss=1" in panel.inner_text()
    watch.assert_nothing_ran("python trace, root span")
