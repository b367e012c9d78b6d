"""Fixtures of the viewer tests: a store filled by real runs (XSS corpus planted), a client.

`viewer_store` (session) runs four small suites against the fake OpenAI server; see
viewer_testkit.build_store. `client` is a TestClient of a viewer bound to 127.0.0.1:8765.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from viewer_testkit import XSS, Responder, ViewerStore, build_store, make_client

from harness.fakeserver import FakeServer, Reply


@pytest.fixture(scope="session")
def viewer_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerStore]:
    responder = Responder()
    tool_script = [
        Reply.tool_call("lookup", {"city": "Paris " + XSS[0]}),
        Reply(content="Paris it is"),
    ]
    server = FakeServer(responder=responder, tool_script=tool_script)
    with server.run_in_thread() as handle:
        yield build_store(tmp_path_factory.mktemp("viewer"), handle.url, responder)


@pytest.fixture
def client(viewer_store: ViewerStore) -> Iterator[TestClient]:
    with make_client(viewer_store) as test_client:
        yield test_client
