"""schemathesis against the edge's own OpenAPI schema (issue 8 §3): a real edge with its
backends on 127.0.0.1, the schema read from the running server's /openapi.json, every
operation fuzzed with a few examples (valid and invalid input). No response may be a 5xx,
and each must conform to the schema: a documented status, content type and body.

Bounded: few examples per operation, streams unpaced (`realtime=false`), text capped at
200 characters so a generated sentence cannot make a long stream, uploads capped at 5 s.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.edge.server import EdgeServer
from tests.support.stack import Edge, Stack

MAX_TEXT_CHARS = 200
EXAMPLES = 8  # per operation and generation mode (valid / invalid input)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    """An edge like tests/integration/test_edge_http.py's (small upload limits, debug endpoints on),
    with a short text limit: its TTS settings are not among Stack.edge's arguments."""
    settings_ = stack.edge_settings(max_upload_bytes=400_000, max_upload_seconds=5.0,
                                    debug={"endpoints": True})
    settings_ = settings_.model_copy(update={"tts": settings_.tts.model_copy(
        update={"max_text_chars": MAX_TEXT_CHARS})})

    async def start() -> EdgeServer:
        server = EdgeServer(settings_, "127.0.0.1", 0, grpc_port=0)
        await server.start()
        return server

    server = stack.loop.run(start())
    stack.edges.append(server)  # stopped with the stack
    return Edge(server, server.url.rstrip("/"), server.grpc.address)


@pytest.fixture(scope="module")
def api_schema(edge: Edge) -> Any:
    return schemathesis.openapi.from_url(f"{edge.url}/openapi.json", timeout=30)


def fuzz_operation(operation: Any, statuses: set[int]) -> None:
    """`EXAMPLES` valid and `EXAMPLES` invalid requests to one operation, every check on
    each; the status codes seen go into `statuses`."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))
    streams = "realtime" in {p.name for p in operation.query}

    @settings(max_examples=2 * EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        if streams:  # a stream: as fast as it is made, not at 25 frames/s
            case.query = {**(case.query or {}), "realtime": "false"}
        response = case.call_and_validate(checks=CHECKS, timeout=60)
        statuses.add(response.status_code)

    run()


def test_edge_api_conforms_and_never_fails(api_schema: Any) -> None:
    """Every operation in turn; the failures of all of them are reported together.

    (schemathesis' own pytest integration, `from_fixture(...).parametrize()`, does not run
    under pytest 9.2: it sets `Function._nodeid`, which pytest no longer has.)"""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = [op.label for op in operations]
    assert "GET /generate" in labels and "POST /generate-from-audio" in labels
    failures: dict[str, str] = {}
    seen: dict[str, set[int]] = {}
    for operation in operations:
        try:
            fuzz_operation(operation, seen.setdefault(operation.label, set()))
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 (reported together)
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # Real streams ran (not only refusals), and invalid input was refused.
    for label in ("GET /generate", "POST /generate"):
        assert 200 in seen[label] and seen[label] & {400, 404, 422}, (label, seen[label])
