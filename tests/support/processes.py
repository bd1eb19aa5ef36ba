"""The stack as real processes on 127.0.0.1, for tests that kill, stop and restart services.

Every service runs as `python -m synctalk serve SERVICE --host 127.0.0.1 --port P`, the way
it runs in production, so `kill -9` and SIGTERM hit a real process with its own sockets. A
service is restarted on the port it had, so the edge finds it again at the same target
without being told. `ProcessStack.close` kills whatever still runs: no process outlives the
fixture that made it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.edge import stream_format
from tests.support.avatars import make_avatar
from tests.support.paths import ROOT, free_port

AVATAR = "demo"
AVATAR_SIZE = (160, 128)  # width, height
START_TIMEOUT_S = 90.0
BACKENDS = ("tts", "audio_features", "renderer")
SERVING = health_pb2.HealthCheckResponse.SERVING


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               step_s: float = 0.05) -> float:
    """Poll `predicate` until it is true; the seconds it took. Raises on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(step_s)
    return time.monotonic() - started


def grpc_health(address: str, timeout_s: float = 1.0) -> int | None:
    """The server's overall grpc.health.v1 status, or None if it does not answer."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.RpcError:
        return None
    return reply.status


class ServiceProcess:
    """One service process that can be started, killed, stopped and started again on its port."""

    def __init__(self, label: str, service: str, port: int, env: dict[str, str],
                 log_dir: Path, host: str = "127.0.0.1") -> None:
        self.label = label
        self.service = service
        self.host = host  # any of 127.0.0.0/8: replicas on one port behind one DNS name
        self.port = port
        self.env = env
        self.log_path = log_dir / f"{label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawn the process (returns at once; `wait_ready` waits for it to serve)."""
        assert not self.running, f"{self.label} is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "synctalk", "serve", self.service,
                 "--host", self.host, "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise AssertionError(f"{self.label} exited ({code}); log:\n{self.log_tail()}")
        return grpc_health(self.address) == SERVING

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> float:
        return wait_until(self.ready, timeout_s, f"{self.label} to serve", step_s=0.1)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; sockets are closed by the kernel."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Kill if still running and reap; safe to call at any time."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Started and ready inside the block, stopped after it (even when start-up fails)."""
        self.start()
        try:
            self.wait_ready()
            yield
        finally:
            self.stop()

    def rss_bytes(self) -> int:
        """Resident set size of the process now (VmRSS from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for {self.label}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class EdgeProcess(ServiceProcess):
    """The edge: HTTP on `port`, gRPC Avatar on `grpc_port`; ready when /health answers."""

    def __init__(self, label: str, port: int, grpc_port: int, env: dict[str, str],
                 log_dir: Path) -> None:
        super().__init__(label, "edge", port, {
            **env, "SYNCTALK_SERVICES__EDGE_GRPC_PORT": str(grpc_port)}, log_dir)
        self.grpc_port = grpc_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def health(self) -> dict[str, str]:
        """Each service's state as the edge's GET /health reports it."""
        with self.client(timeout=5) as client:
            return client.get("/health").json()["services"]

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise AssertionError(f"{self.label} exited ({code}); log:\n{self.log_tail()}")
        try:
            with self.client(timeout=2) as client:
                return client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False


class ProcessStack:
    """tts, audio_features, `renderers` renderer replicas and edges, each its own process.

    `add_edge(renderers)` makes an edge whose renderer target lists the given replicas (one
    `ipv4:` target, balanced with round_robin as for a DNS name with several addresses).
    Nothing runs until `start`; `close` (or leaving `running()`) kills whatever still runs.
    """

    def __init__(self, root: Path, renderers: int = 1, **settings: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        store = root / "avatars"
        if not (store / AVATAR).exists():
            make_avatar(store, AVATAR, num_frames=10, width=AVATAR_SIZE[0], height=AVATAR_SIZE[1])
        self.env = {
            **os.environ,
            "SYNCTALK_MODELS__DEVICE": "cpu",
            "SYNCTALK_MODELS__AVATARS_DIR": str(store),
            "SYNCTALK_LOG_FORMAT": "json",
            **{f"SYNCTALK_{key.upper()}": value for key, value in settings.items()},
        }
        self.backends: dict[str, ServiceProcess] = {
            name: ServiceProcess(name, name, free_port(), self.env, root)
            for name in ("tts", "audio_features")
        }
        self.renderers = [ServiceProcess(f"renderer{i}", "renderer", free_port(), self.env, root)
                          for i in range(renderers)]
        self.backends["renderer"] = self.renderers[0]
        self.edges: list[EdgeProcess] = []

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.backends["tts"], self.backends["audio_features"], *self.renderers,
                *self.edges]

    def add_edge(self, renderers: Iterable[ServiceProcess] | None = None,
                 label: str | None = None, targets: dict[str, str] | None = None,
                 **settings: str) -> EdgeProcess:
        """An edge (not started yet) on the backends, with the given renderer replicas;
        `targets` replaces a backend's address (e.g. by a proxy's), `settings` are this
        edge's own `SYNCTALK_*` overrides."""
        replicas = list(renderers) if renderers is not None else [self.renderers[0]]
        targets = targets or {}
        env = {
            **self.env,
            "SYNCTALK_SERVICES__TTS_TARGET": targets.get("tts", self.backends["tts"].address),
            "SYNCTALK_SERVICES__AUDIO_FEATURES_TARGET": targets.get(
                "audio_features", self.backends["audio_features"].address),
            "SYNCTALK_SERVICES__RENDERER_TARGET": targets.get(
                "renderer", "ipv4:" + ",".join(r.address for r in replicas)),
            **{f"SYNCTALK_{key.upper()}": value for key, value in settings.items()},
        }
        edge = EdgeProcess(label or f"edge{len(self.edges)}", free_port(), free_port(), env,
                           self.root)
        self.edges.append(edge)
        return edge

    def close(self) -> None:
        """Kill every process still running (edges first, so they do not log the others)."""
        for proc in reversed(self.processes):
            proc.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProcessStack]:
        try:
            yield self
        finally:
            self.close()


class AvStream:
    """One HTTP request for a `format=av` stream, read on a thread as it arrives: the status,
    the session id, each frame's arrival time and the final "end" message with its own."""

    def __init__(self, edge: EdgeProcess, path: str, *, params: dict[str, str] | None = None,
                 **request: Any) -> None:
        self.edge = edge
        self.status: int | None = None
        self.session_id: str | None = None
        self.body = b""  # the error body of a refused request
        self.frame_times: list[float] = []
        self.end: dict[str, Any] | None = None
        self.end_at: float | None = None
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self.done = threading.Event()
        self._args = (path, {"format": "av", **(params or {})}, request)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        path, params, request = self._args
        try:
            with self.edge.client(timeout=60) as client, \
                    client.stream("POST", path, params=params, **request) as reply:
                self.status = reply.status_code
                self.session_id = reply.headers.get("x-session-id")
                if reply.status_code != 200:
                    self.body = reply.read()
                    return
                reader = stream_format.Reader()
                for chunk in reply.iter_bytes():
                    now = time.monotonic()
                    for header, _payload in reader.feed(chunk):
                        if header["type"] == "frame":
                            self.frame_times.append(now)
                        elif header["type"] == "end":
                            self.end, self.end_at = header, now
        except BaseException as err:  # reported by the test, not lost in the thread
            self.error = err
        finally:
            self.done.set()

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    def wait_frames(self, n: int, timeout_s: float = 30.0) -> None:
        wait_until(lambda: self.frames >= n or self.done.is_set(), timeout_s, f"{n} frames")
        assert self.frames >= n, f"stream ended after {self.frames} frames: {self.summary()}"

    def finish(self, timeout_s: float = 30.0) -> AvStream:
        assert self.done.wait(timeout_s), f"stream still running after {timeout_s} s"
        assert self.error is None, repr(self.error)
        return self

    def summary(self) -> str:
        return (f"status={self.status} frames={self.frames} end={self.end} "
                f"error={self.error!r} body={self.body[:200]!r}")


class HeldCall:
    """A bidirectional call whose requests the test feeds one by one, its responses collected
    on a thread (any stream method)."""

    def __init__(self, method: Callable[..., Any], first: object, *, timeout_s: float = 60,
                 metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.requests: queue.Queue[object] = queue.Queue()
        self.requests.put(first)
        self.responses: list[Any] = []
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self.call = method(iter(self.requests.get, None), timeout=timeout_s, metadata=metadata)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        try:
            for response in self.call:
                self.responses.append(response)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.done.set()

    def send(self, *requests: object) -> None:
        for request in requests:
            self.requests.put(request)

    def close(self) -> None:
        self.requests.put(None)
