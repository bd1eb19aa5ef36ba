"""deploy/k8s validated offline: the base and both overlays render (deploy/k8s/render.py, the
kustomize subset they use) and every object passes the Kubernetes JSON schemas bundled with
`kubernetes-validate` (strict: unknown fields fail), plus the properties the deployment
relies on. A manifest with a planted error fails."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from synctalk.config import load_settings
from tests.support.paths import ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
FOLDERS = {"base": K8S / "base", "cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
BACKENDS = {"tts": 50061, "audio-features": 50062, "renderer": 50063}

_spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
assert _spec and _spec.loader
kustomize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kustomize)

Obj = dict[str, Any]


def validate(objects: list[Obj]) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} at {where}: "
                                 f"{err.message}") from None


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def pod(objects: list[Obj], name: str) -> Obj:
    return find(objects, "Deployment", name)["spec"]["template"]


def container(objects: list[Obj], name: str) -> Obj:
    return pod(objects, name)["spec"]["containers"][0]


@pytest.fixture(scope="module", params=list(FOLDERS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, kustomize.render(FOLDERS[request.param])


def test_every_object_passes_the_schemas(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    assert len(objects) >= 14
    validate(objects)


def test_backends_are_headless_with_grpc_probes(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for name, port in BACKENDS.items():
        service = find(objects, "Service", name)
        assert service["spec"]["clusterIP"] == "None", f"{name} must be headless"
        assert {"name": "grpc", "port": port, "targetPort": "grpc"} in service["spec"]["ports"]
        c = container(objects, name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"  # leave DNS first
        assert {"name": "grpc", "containerPort": port} in c["ports"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SYNCTALK_SERVICES__METRICS_PORT"] == "9464"
    edge = container(objects, "edge")
    assert edge["readinessProbe"]["grpc"]["port"] == 50064
    assert edge["livenessProbe"]["grpc"]["port"] == 50064


def test_pods_run_non_root_on_a_read_only_root(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for name in [*BACKENDS, "edge"]:
        template = pod(objects, name)["spec"]
        assert template["securityContext"]["runAsNonRoot"] is True
        assert template["securityContext"]["runAsUser"] != 0
        c = template["containers"][0]
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in template["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert all(m["name"] in volumes for m in mounts.values())
        assert c["resources"]["requests"] and c["resources"]["limits"]


def test_avatars_come_read_only_from_the_claim(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    claim = find(objects, "PersistentVolumeClaim", "synctalk-avatars")
    for name in ("renderer", "edge"):
        template = pod(objects, name)["spec"]
        mount = next(m for m in template["containers"][0]["volumeMounts"]
                     if m["mountPath"] == "/avatars")
        volume = next(v for v in template["volumes"] if v["name"] == mount["name"])
        assert mount["readOnly"] is True
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"],
                                                   "readOnly": True}


def test_selectors_budgets_and_autoscaler_match_the_pods(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    for obj in objects:
        if obj["kind"] == "Service":
            labels = pod(objects, obj["metadata"]["name"])["metadata"]["labels"]
            assert obj["spec"]["selector"].items() <= labels.items()
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} >= {"renderer", "edge"}
    for budget in budgets:
        labels = pod(objects, budget["metadata"]["name"])["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(objects, "HorizontalPodAutoscaler", "renderer")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "renderer"
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "synctalk_renderer_active_streams"
    assert "replicas" not in find(objects, "Deployment", "renderer")["spec"]  # the HPA's


def test_the_edge_is_exposed_with_the_security_defaults(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    env = {e["name"]: e for e in container(objects, "edge")["env"]}
    assert env["SYNCTALK_SERVICES__API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "synctalk-edge", "key": "api-token"}
    assert env["SYNCTALK_SERVICES__EXPOSURE"]["value"] == "network"
    assert env["SYNCTALK_DEBUG__ENDPOINTS"]["value"] == "false"
    assert env["SYNCTALK_SERVICES__RATE_LIMIT_PER_S"]["value"] == "0"  # the ingress limits
    targets = {name: env[f"SYNCTALK_SERVICES__{key}_TARGET"]["value"] for name, key in
               (("tts", "TTS"), ("audio-features", "AUDIO_FEATURES"), ("renderer", "RENDERER"))}
    for name, target in targets.items():
        assert target == f"{name}:{BACKENDS[name]}"  # the headless Service's DNS name
    ingress = find(objects, "Ingress", "edge")
    assert ingress["spec"]["tls"], "TLS ends at the ingress"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "edge", "port": {"name": "http"}}


def test_the_environment_is_settings_the_services_read(rendered: tuple[str, list[Obj]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SYNCTALK_* variable of every container is one the config accepts (a typo would
    be ignored silently by pydantic-settings)."""
    _, objects = rendered
    for name in [*BACKENDS, "edge"]:
        env = {e["name"]: e.get("value", "secret") for e in container(objects, name)["env"]
               if e["name"].startswith("SYNCTALK_")}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        dumped = load_settings().model_dump()
        for key, value in env.items():
            node: Any = dumped
            for part in key.removeprefix("SYNCTALK_").lower().split("__"):
                assert isinstance(node, dict) and part in node, f"{name}: unknown setting {key}"
                node = node[part]
            if isinstance(node, int | float) and not isinstance(node, bool):
                assert node == float(value), (key, node, value)
            else:
                assert str(node).lower() == value.lower(), (key, node, value)
        for key in env:
            monkeypatch.delenv(key)


def test_gpu_overlay_asks_for_a_gpu_per_renderer() -> None:
    objects = kustomize.render(FOLDERS["gpu"])
    template = pod(objects, "renderer")["spec"]
    c = template["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["limits"]["memory"]  # the base's limits survive the patch
    assert c["image"] == "synctalk:gpu"
    assert template["nodeSelector"] and template["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert env["SYNCTALK_MODELS__DEVICE"] == "cuda" and env["CUPY_CACHE_DIR"].startswith("/cache")
    assert {e["name"] for e in c["env"]} >= {"SYNCTALK_SERVICES__METRICS_PORT"}  # merged by name
    for name in ("tts", "audio-features", "edge"):
        assert container(objects, name)["image"] == "synctalk:cpu"
        assert "nvidia.com/gpu" not in container(objects, name)["resources"]["limits"]
    cpu = kustomize.render(FOLDERS["cpu"])
    assert "nvidia.com/gpu" not in container(cpu, "renderer")["resources"]["limits"]
    assert all(o["metadata"]["namespace"] == "synctalk" for o in objects)


PLANTED = {
    "unknown field": ("renderer.yaml", "          readinessProbe:\n",
                      "          readinessProbez:\n"),
    "wrong type": ("renderer.yaml", "          imagePullPolicy: IfNotPresent\n",
                   "          imagePullPolicy: [IfNotPresent]\n"),
    "missing required": ("edge.yaml", "            - name: SYNCTALK_SERVICES__TTS_TARGET\n"
                         "              value: tts:50061\n", "            - value: tts:50061\n"),
}


@pytest.mark.parametrize("error", list(PLANTED))
def test_a_planted_error_fails_validation(error: str, tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    name, good, bad = PLANTED[error]
    path = copy / "base" / name
    text = path.read_text()
    assert text.count(good) == 1, good
    path.write_text(text.replace(good, bad))
    with pytest.raises(AssertionError, match="at spec/template/spec/containers"):
        validate(kustomize.render(copy / "overlays" / "cpu"))


def test_rendering_refuses_what_it_does_not_support(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    path = copy / "overlays" / "cpu" / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["configMapGenerator"] = [{"name": "x", "literals": ["a=b"]}]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(kustomize.KustomizeError, match="configMapGenerator"):
        kustomize.render(copy / "overlays" / "cpu")
