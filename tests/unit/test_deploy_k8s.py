"""deploy/k8s agrees with the code it deploys: commands, probes on the settings' ports, whole CPUs with
matching threads, KEDA on the streams in shared/keys.py, secrets mounted never written; validated offline."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from services.gateway.access import Access
from services.gateway.settings import GatewaySettings
from services.llm.settings import LlmSettings
from shared.auth import MissingSecretError, TokenSettings
from tests.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    GEMINI_ENV,
    GOOGLE_KEY_PATTERN,
    HEALTH_PATHS,
    K8S,
    MODEL_SERVICES,
    QUEUES,
    ROOT,
    SERVICES,
    THREAD_ENV,
    cli_accepts,
    cpu_count,
    k8s_docs,
    k8s_env,
    k8s_files,
    main_container,
    manifests_of_kind,
    settings_for,
    threads_of,
    validator,
)

pytestmark = pytest.mark.unit


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
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    assert {image["name"] for image in kustomization["images"]} == {"voxmesh"}
    for doc in k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"]


def test_k8s_deployments_run_cli_commands() -> None:
    deployments = manifests_of_kind("Deployment")
    assert set(deployments) == {"redis", *SERVICES}
    for name in SERVICES:
        container = main_container(deployments[name])
        assert container["image"] == "voxmesh"
        assert "command" not in container, "keep the image's ENTRYPOINT (voxmesh)"
        assert container["args"] == [name] and cli_accepts(name)


def _check_probes(name: str, container: dict[str, Any], port: int) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in HEALTH_PATHS, f"{name} {probe}"
        probe_port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert probe_port == port, f"{name} {probe} on {probe_port}, service listens on {port}"


def test_k8s_probes_hit_health_endpoints_on_the_settings_port(clean_env: pytest.MonkeyPatch) -> None:
    deployments = manifests_of_kind("Deployment")
    services = manifests_of_kind("Service")
    for name in SERVICES:
        pod = deployments[name]["spec"]["template"]
        container = main_container(deployments[name])
        settings = settings_for(name, k8s_env(container), clean_env)
        assert settings.http_host == "0.0.0.0"
        assert settings.redis_url.startswith("redis://redis:6379")
        _check_probes(name, container, settings.http_port)
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        # The gateway serves /metrics on a port of its own, never on the public one.
        metrics_port = settings.metrics_port if isinstance(settings, GatewaySettings) else settings.http_port
        assert annotations["prometheus.io/port"] == str(metrics_port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert [p["port"] for p in services[name]["spec"]["ports"]] == [settings.http_port]
        if isinstance(settings, GatewaySettings):
            assert settings.metrics_port != settings.http_port and settings.metrics_host == "0.0.0.0"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == settings.metrics_port


def test_k8s_grace_period_covers_the_drain(clean_env: pytest.MonkeyPatch) -> None:
    for name, deployment in manifests_of_kind("Deployment").items():
        if name == "redis":
            continue
        container = main_container(deployment)
        settings = settings_for(name, k8s_env(container), clean_env)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= pre_stop + getattr(settings, "shutdown_grace_s", 0), name


def test_k8s_model_pods_get_whole_cpus_and_matching_threads(clean_env: pytest.MonkeyPatch) -> None:
    deployments = manifests_of_kind("Deployment")
    for name in MODEL_SERVICES:
        container = main_container(deployments[name])
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], f"{name}: Guaranteed QoS"
        cpus = cpu_count(resources["limits"]["cpu"])
        assert cpus.is_integer() and cpus >= 1, f"{name}: whole CPUs"
        if name in THREAD_ENV:
            env = k8s_env(container)
            assert int(env[THREAD_ENV[name]]) == int(cpus), name
            assert threads_of(settings_for(name, env, clean_env)) == int(cpus), name


def test_k8s_pods_run_as_non_root() -> None:
    for name, deployment in manifests_of_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        security = main_container(deployment)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
    assert re.search(r"^USER 10001", DOCKERFILE.read_text(), re.M)
    for name in SERVICES:
        assert (
            manifests_of_kind("Deployment")[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            == 10001
        )


def test_keda_scales_workers_on_the_streams_in_shared_keys() -> None:
    scaled = manifests_of_kind("ScaledObject")
    auths = manifests_of_kind("TriggerAuthentication")
    secrets = manifests_of_kind("Secret")
    assert set(scaled) == set(MODEL_SERVICES), "the gateway is not autoscaled"
    for name, (stream, group) in QUEUES.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in manifests_of_kind("Deployment")
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
    assert not manifests_of_kind("HorizontalPodAutoscaler"), "KEDA owns the HPAs"


def test_gateway_has_a_disruption_budget() -> None:
    budgets = manifests_of_kind("PodDisruptionBudget")
    labels = manifests_of_kind("Deployment")["gateway"]["spec"]["template"]["metadata"]["labels"]
    selectors = [b["spec"]["selector"]["matchLabels"] for b in budgets.values()]
    assert any(sel.items() <= labels.items() for sel in selectors)
    assert manifests_of_kind("Deployment")["gateway"]["spec"]["replicas"] >= 2


def test_gemini_key_is_a_mounted_secret_never_a_literal(clean_env: pytest.MonkeyPatch) -> None:
    for name, secret in manifests_of_kind("Secret").items():
        assert "data" not in secret, f"{name}: templates carry no values"
        assert all(value == "" for value in secret["stringData"].values()), f"{name} holds a value"
    for doc in manifests_of_kind("Deployment").values():
        for item in main_container(doc).get("env", []):
            assert item["name"] not in GEMINI_ENV, "the key comes as a file, not an env value"
    for configmap in manifests_of_kind("ConfigMap").values():
        assert not GEMINI_ENV & set(configmap["data"])
    llm = manifests_of_kind("Deployment")["llm"]
    container = main_container(llm)
    key_file = Path(k8s_env(container)["VOXMESH_LLM_GEMINI_API_KEY_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(key_file.parent))
    volume = next(v for v in llm["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "voxmesh-gemini"
    assert [item["path"] for item in volume["secret"]["items"]] == [key_file.name]
    settings = settings_for("llm", k8s_env(container), clean_env)
    assert isinstance(settings, LlmSettings) and settings.gemini_api_key is None
    assert settings.gemini_api_key_file == key_file


def test_gateway_requires_tokens_signed_with_a_mounted_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gateway = manifests_of_kind("Deployment")["gateway"]
    container = main_container(gateway)
    env = k8s_env(container)
    settings = settings_for("gateway", env, clean_env)
    assert isinstance(settings, GatewaySettings) and settings.auth == "required"
    assert settings.tokens.secret is None and not settings.token_endpoint
    secret_file = Path(env["VOXMESH_TOKEN_SECRET_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(secret_file.parent))
    volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "voxmesh-gateway-token"
    assert [item["path"] for item in volume["secret"]["items"]] == [secret_file.name]
    assert manifests_of_kind("Secret")["voxmesh-gateway-token"]["stringData"] == {"secret": ""}
    # The template's empty secret stops the gateway at startup instead of letting it run open.
    empty = tmp_path / secret_file.name
    empty.write_text("")
    with clean_env.context() as patch:
        patch.setenv("VOXMESH_TOKEN_SECRET_FILE", str(empty))
        with pytest.raises(MissingSecretError):
            Access(settings.model_copy(update={"tokens": TokenSettings()}))


def test_no_api_key_in_any_deployment_file() -> None:
    paths = [DOCKERFILE, DOCKERIGNORE, COMPOSE, *K8S.glob("*.yaml"), ROOT / "docs" / "deploy.md"]
    for path in paths:
        assert not GOOGLE_KEY_PATTERN.search(path.read_text()), f"an API key is written in {path}"


def test_k8s_manifests_validate_offline() -> None:
    tool = validator("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "-k", "1.32", *map(str, k8s_files())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only KEDA's CRDs may lack a schema.
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("WARN"):
            assert "keda.sh/" in line, line
