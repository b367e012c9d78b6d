"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from harness.fakeserver import FakeServer, ThreadedFakeServer

# ---------------------------------------------------------------------------------------------
# Environment (conftest loads before any test module imports litellm)
# ---------------------------------------------------------------------------------------------

# litellm must not fetch its model cost map over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# ---------------------------------------------------------------------------------------------
# Fake OpenAI-compatible server (harness/fakeserver.py)
#
#   fake_server          started FakeServer (latency 0, no faults, seed 0), per test
#   fake_server_factory  `await fake_server_factory(latency_ms=5, faults=Faults(...))`;
#                        every server it made is stopped after the test
#   fake_server_thread   one server for the whole session on a background thread, for sync
#                        tests; shared, so call `.reset_stats()` before asserting on counts
# ---------------------------------------------------------------------------------------------

FakeServerFactory = Callable[..., Awaitable[FakeServer]]


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    async with FakeServer(latency_ms=0, seed=0) as server:
        yield server


@pytest.fixture
async def fake_server_factory() -> AsyncIterator[FakeServerFactory]:
    servers: list[FakeServer] = []

    async def make(**options: Any) -> FakeServer:
        server = FakeServer(**options)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture(scope="session")
def fake_server_thread() -> Iterator[ThreadedFakeServer]:
    handle = FakeServer(latency_ms=0, seed=0).run_in_thread()
    yield handle
    handle.stop()
