"""Render a kustomization without kubectl: the subset deploy/k8s uses.

    python deploy/k8s/render.py deploy/k8s/overlays/cpu > synctalk.yaml

Supported: `resources` (files and kustomization folders), `patches` (strategic-merge patches
by `path` or inline `patch`, matched on kind and name; lists of named items such as
containers, env, ports and volumes merge by name, other lists are replaced), `namespace`,
`labels` (with `includeTemplates`) and `images`. Anything else is refused, so a
kustomization that uses more fails here instead of rendering something else than kubectl
would. `kubectl kustomize` (or `kubectl apply -k`) works on the same folders.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition", "IngressClass",
                  "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class KustomizeError(ValueError):
    pass


def render(folder: Path) -> list[Obj]:
    """The objects the kustomization in `folder` produces, in order."""
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        objects += render(target) if target.is_dir() else load(target)
    for patch in spec.get("patches", []):
        if set(patch) - {"path", "patch"}:
            raise KustomizeError(f"{path}: only strategic-merge patches by path or inline")
        body = (folder / patch["path"]).read_text() if "path" in patch else patch["patch"]
        for doc in yaml.safe_load_all(body):
            apply_patch(objects, doc, path)
    for label in spec.get("labels", []):
        add_labels(objects, label)
    for image in spec.get("images", []):
        set_images(objects, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return objects


def load(path: Path) -> list[Obj]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise KustomizeError(f"{path}: every document needs kind and metadata")
    return docs


def apply_patch(objects: list[Obj], patch: Obj, where: Path) -> None:
    for obj in objects:
        if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]:
            merged = merge(obj, patch)
            obj.clear()
            obj.update(merged)
            return
    raise KustomizeError(f"{where}: patch target {patch['kind']}/{patch['metadata']['name']} "
                         "not found")


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge, simplified: maps merge, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def add_labels(objects: list[Obj], label: Obj) -> None:
    if set(label) - {"pairs", "includeTemplates", "includeSelectors"} or label.get(
            "includeSelectors"):
        raise KustomizeError("labels: only pairs and includeTemplates are supported")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(label["pairs"])
        if label.get("includeTemplates") and obj["kind"] in WORKLOADS:
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(label["pairs"])


def set_images(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                name = image.get("newName", name)
                tag = image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: render.py KUSTOMIZATION_FOLDER", file=sys.stderr)
        return 2
    yaml.safe_dump_all(render(Path(argv[0])), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
