"""Exposure rules of the edge (issue 14): API token off loopback, Host allowlist on loopback
(DNS rebinding), a per-client rate limit, and compose publishing on 127.0.0.1.

The policy object is tested alone with a fake clock; then as the real HTTP app (uvicorn on
127.0.0.1, or in-process as it runs on 0.0.0.0, since nothing listens off loopback in tests)
and as the real gRPC Avatar service.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import yaml

from services.edge.access import AccessPolicy, host_name
from synctalk.config import ServicesConfig
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc
from synctalk.rpc.server import GrpcServer
from tests.support.compose import COMPOSE, compose_config
from tests.support.stack import Stack

TOKEN = "s3cret-token"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(listen: str, clock: Clock | None = None, **services: Any) -> AccessPolicy:
    return AccessPolicy(ServicesConfig(**services), listen, clock or Clock())


# -- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000",
                                  "LOCALHOST:1"])
def test_on_loopback_the_allowed_hosts_pass_with_any_port(host: str) -> None:
    assert policy("127.0.0.1").check({"Host": host}, "127.0.0.1", kind="generate") is None


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "localhost.evil.example:8000"])
def test_on_loopback_a_rebound_host_name_is_refused(host: str) -> None:
    for kind in ("read", "generate"):
        denied = policy("127.0.0.1").check({"host": host}, "127.0.0.1", kind=kind)
        assert denied is not None and denied.http_status == 403
        assert denied.grpc_code == grpc.StatusCode.PERMISSION_DENIED
        assert "services.allowed_hosts" in denied.reason


def test_host_names_drop_the_port() -> None:
    assert [host_name(h) for h in ("a:1", "[::1]:80", "[::1]", "::1", "A")] == \
        ["a", "[::1]", "[::1]", "::1", "a"]


def test_off_loopback_generation_without_a_configured_token_is_refused() -> None:
    exposed = policy("0.0.0.0")
    denied = exposed.check({"authorization": "Bearer anything"}, "10.0.0.9", kind="generate")
    assert denied is not None and denied.http_status == 403
    assert "services.api_token" in denied.reason
    assert exposed.check({}, "10.0.0.9", kind="read") is None  # the page and health stay open


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"},
                                     {"x-api-token": TOKEN[:-1]}, {"authorization": TOKEN}])
def test_off_loopback_a_missing_or_wrong_token_is_unauthenticated(headers: dict[str, str]) -> None:
    for kind in ("generate", "animate", "live"):
        denied = policy("0.0.0.0", api_token=TOKEN).check(headers, "10.0.0.9", kind=kind)
        assert denied is not None and denied.http_status == 401
        assert denied.grpc_code == grpc.StatusCode.UNAUTHENTICATED
        assert denied.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {TOKEN}"},
                                     {"authorization": f"bearer {TOKEN}"}, {"x-api-token": TOKEN}])
def test_off_loopback_the_token_opens_generation(headers: dict[str, str]) -> None:
    # Off loopback the Host header is not checked: a public name is what clients send.
    headers = {**headers, "host": "avatar.example.com"}
    assert policy("0.0.0.0", api_token=TOKEN).check(headers, "10.0.0.9", kind="generate") is None


def test_exposure_overrides_the_listen_address() -> None:
    """compose.yaml: the container listens on 0.0.0.0, published on the host's 127.0.0.1."""
    assert policy("0.0.0.0", exposure="loopback").check({}, "172.17.0.1", kind="generate") is None
    denied = policy("127.0.0.1", exposure="network").check({}, "127.0.0.1", kind="animate")
    assert denied is not None and denied.http_status == 403


def test_each_client_gets_a_token_bucket() -> None:
    clock = Clock()
    limited = policy("127.0.0.1", clock, rate_limit_per_s=1.0, rate_limit_burst=3)
    assert [limited.check({}, "a", kind="generate") for _ in range(3)] == [None] * 3
    denied = limited.check({}, "a", kind="generate")
    assert denied is not None and denied.http_status == 429
    assert denied.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert denied.headers["Retry-After"] == "1"
    assert limited.check({}, "b", kind="animate") is None  # another client is not held back
    assert limited.check({}, "a", kind="read") is None  # reads are not counted
    clock.now += 1.0
    assert limited.check({}, "a", kind="generate") is None
    assert limited.check({}, "a", kind="generate") is not None


def test_the_defaults_are_safe() -> None:
    services = ServicesConfig()
    assert services.api_token == "" and services.exposure == "auto"
    assert services.allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    assert services.rate_limit_per_s == 10 and services.rate_limit_burst == 60


# -- the HTTP app --------------------------------------------------------------------------


def test_dns_rebinding_is_refused_before_the_body_is_read(stack: Stack) -> None:
    edge = stack.edge()
    with edge.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Host": f"localhost:{edge.server.http_port}"}) \
            .status_code == 200
        rebound = client.get("/health", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403 and "allowed_hosts" in rebound.json()["detail"]
    # A 50 MB upload announced, no body sent: the refusal comes at once, without waiting.
    with socket.create_connection(("127.0.0.1", edge.server.http_port), timeout=5) as sock:
        sock.sendall(b"POST /generate-from-audio HTTP/1.1\r\nHost: attacker.example\r\n"
                     b"Content-Type: audio/wav\r\nContent-Length: 52428800\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 403 ")


def test_the_http_rate_limit_answers_429_with_retry_after(stack: Stack) -> None:
    edge = stack.edge(rate_limit_per_s=0.5, rate_limit_burst=2)
    with edge.client() as client:
        codes = [client.post("/generate", json={"text": ""}).status_code for _ in range(2)]
        assert codes == [422, 422]  # through the gate, refused for the empty text
        limited = client.post("/generate", json={"text": ""})
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("token", ["", TOKEN])
def test_off_loopback_the_http_api_needs_the_token(stack: Stack, token: str) -> None:
    from services.edge.app import create_app
    from services.edge.runtime import EdgeRuntime

    settings = stack.edge_settings(api_token=token)

    async def calls() -> list[httpx.Response]:
        runtime = EdgeRuntime(settings)
        app = create_app(settings, runtime, host="0.0.0.0")
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://avatar.example.com") as c:
                return [await c.post("/generate", json={"text": ""}),
                        await c.post("/generate", json={"text": ""},
                                     headers={"Authorization": f"Bearer {TOKEN}"}),
                        await c.get("/get-tts-audio", params={"text": "hi"}),
                        await c.get("/health"),
                        await c.get("/idle")]
        finally:
            await runtime.close()

    without, with_token, tts_audio, health, idle = stack.loop.run(calls())
    assert health.status_code == 200
    if token:
        assert without.status_code == 401 and without.headers["www-authenticate"] == "Bearer"
        assert with_token.status_code == 422  # through the gate
        assert tts_audio.status_code == idle.status_code == 401
    else:
        assert without.status_code == with_token.status_code == tts_audio.status_code == 403
        assert idle.status_code == 403


# -- gRPC Animate --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed_animate(stack: Stack) -> Iterator[str]:
    """The real Avatar service with the policy of an edge on 0.0.0.0 (served on 127.0.0.1)."""
    from services.edge.animate import AvatarServicer
    from services.edge.runtime import EdgeRuntime

    settings = stack.edge_settings(api_token=TOKEN)

    async def start() -> tuple[GrpcServer, EdgeRuntime]:
        runtime = EdgeRuntime(settings)
        servicer = AvatarServicer(runtime, AccessPolicy(settings.services, "0.0.0.0"))
        server = GrpcServer([], lambda s: avatar_pb2_grpc.add_AvatarServicer_to_server(servicer, s))
        await server.start()
        return server, runtime

    server, runtime = stack.loop.run(start())
    try:
        yield server.address
    finally:
        async def stop() -> None:
            await server.server.stop(0)
            await runtime.close()
        stack.loop.run(stop())


def animate_error(address: str, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError:
    bad = avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(jpeg_quality=101))
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(avatar_pb2_grpc.AvatarStub(channel).Animate(iter([bad]), timeout=10,
                                                             metadata=metadata))
    return caught.value


def test_off_loopback_animate_needs_the_token(exposed_animate: str) -> None:
    err = animate_error(exposed_animate, ())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "x-api-token" in err.details()
    err = animate_error(exposed_animate, (("x-api-token", "nope"),))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    for metadata in ((("x-api-token", TOKEN),), (("authorization", f"Bearer {TOKEN}"),)):
        err = animate_error(exposed_animate, metadata)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()  # through the gate


# -- compose ------------------------------------------------------------------------------


def test_compose_publishes_the_edge_on_loopback_unless_configured() -> None:
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    edge = yaml.safe_load(result.stdout)["services"]["edge"]
    published = [str(p) for p in edge["ports"]]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert edge["environment"]["SYNCTALK_SERVICES__EXPOSURE"] == "loopback"


def test_compose_can_publish_off_loopback_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTALK_EDGE_BIND", "0.0.0.0")
    monkeypatch.setenv("SYNCTALK_EXPOSURE", "network")
    monkeypatch.setenv("SYNCTALK_API_TOKEN", TOKEN)
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    edge = yaml.safe_load(result.stdout)["services"]["edge"]
    assert all(str(p).startswith("0.0.0.0:") for p in edge["ports"]), edge["ports"]
    assert edge["environment"]["SYNCTALK_SERVICES__API_TOKEN"] == TOKEN
