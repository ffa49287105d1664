"""deploy/k8s agrees with the code it deploys: commands, probes on the settings' ports, whole CPUs with
matching threads, KEDA on the streams in shared/keys.py, the gateway's HPA on a metric it exports,
budgets, network policies and Redis users, secrets mounted never written; the base and the example
overlay render and validate offline."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

from services.gateway.access import Access
from services.gateway.settings import GatewaySettings
from services.llm.settings import LlmSettings
from shared.auth import MissingSecretError, TokenSettings
from shared.metrics import GATEWAY_SESSIONS
from tests.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    EXPORTED_STREAMS,
    GEMINI_ENV,
    GOOGLE_KEY_PATTERN,
    HEALTH_PATHS,
    K8S,
    K8S_OVERLAY,
    MODEL_SERVICES,
    QUEUES,
    REDIS_ACL_SCRIPT,
    REDIS_USERS,
    ROOT,
    SERVICES,
    THREAD_ENV,
    cli_accepts,
    cpu_count,
    k8s_docs,
    k8s_env,
    k8s_files,
    kustomize_build,
    main_container,
    manifests_of_kind,
    of_kind,
    secret_placeholder,
    selects,
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
        "redis-exporter.yaml",
        "gateway.yaml",
        "asr.yaml",
        "llm.yaml",
        "tts.yaml",
        "keda.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "networkpolicy.yaml",
    ]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    [generated] = kustomization["configMapGenerator"]
    assert generated["files"] == [REDIS_ACL_SCRIPT.name]
    assert {image["name"] for image in kustomization["images"]} == {"voxmesh"}
    for doc in k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"]


def test_k8s_deployments_run_cli_commands() -> None:
    deployments = manifests_of_kind("Deployment")
    assert set(deployments) == {"redis", "redis-exporter", *SERVICES}
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
        if name not in SERVICES:
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
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
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
            refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
            for ref in refs.values():
                assert ref["key"] in secrets[ref["name"]]["stringData"]
            # KEDA logs in as its own read-only Redis user.
            username = refs["username"]
            assert secrets[username["name"]]["stringData"][username["key"]] == "keda"
            assert refs["password"]["key"] == "keda"
    # KEDA makes the workers' HPAs; the only hand-written one is the gateway's.
    hpas = manifests_of_kind("HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas.values()} == {"gateway"}


def test_gateway_hpa_scales_on_sessions_it_exports(clean_env: pytest.MonkeyPatch) -> None:
    [hpa] = manifests_of_kind("HorizontalPodAutoscaler").values()
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    gateway = manifests_of_kind("Deployment")["gateway"]
    assert 2 <= spec["minReplicas"] <= gateway["spec"]["replicas"] <= spec["maxReplicas"]
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods"
    # A gauge every gateway exports (not a metric of the HPA's own invention).
    assert metric["pods"]["metric"]["name"] == GATEWAY_SESSIONS._name
    assert GATEWAY_SESSIONS._type == "gauge"
    target = metric["pods"]["target"]
    settings = settings_for("gateway", k8s_env(main_container(gateway)), clean_env)
    assert isinstance(settings, GatewaySettings)
    assert target["type"] == "AverageValue" and 0 < int(target["averageValue"]) < settings.max_sessions
    # Scaling down ends sessions: slower than scaling up.
    behavior = spec["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # prometheus-adapter's rule serves that metric per pod.
    adapter = yaml.safe_load((K8S.parent / "prometheus-adapter" / "values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(GATEWAY_SESSIONS._name + "{")
    assert rule["name"]["as"] == GATEWAY_SESSIONS._name
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_every_service_has_a_disruption_budget() -> None:
    budgets = manifests_of_kind("PodDisruptionBudget")
    deployments = manifests_of_kind("Deployment")
    for name in SERVICES:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets.values() if selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {len(matching)} budgets"
        spec = matching[0]["spec"]
        if name == "gateway":
            assert spec["minAvailable"] == 1
        else:
            # minAvailable 1 on a single replica would block every node drain.
            assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
    assert deployments["gateway"]["spec"]["replicas"] >= 2


def _pod_labels() -> dict[str, dict[str, str]]:
    return {
        name: deployment["spec"]["template"]["metadata"]["labels"]
        for name, deployment in manifests_of_kind("Deployment").items()
    }


def _ports_of(deployment: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in main_container(deployment)["ports"]}


def _allowed_ingress(pod: dict[str, str]) -> list[dict[str, Any]]:
    """The ingress rules of every NetworkPolicy selecting a pod with these labels."""
    rules: list[dict[str, Any]] = []
    for policy in manifests_of_kind("NetworkPolicy").values():
        if selects(policy["spec"]["podSelector"], pod):
            assert policy["spec"]["policyTypes"] == ["Ingress"]
            rules.extend(policy["spec"].get("ingress", []))
    return rules


def test_network_policies_expose_only_the_gateway_and_redis_only_to_the_services() -> None:
    policies = manifests_of_kind("NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies.values()), (
        "a default deny for the namespace"
    )
    deployments = manifests_of_kind("Deployment")
    for name, labels in _pod_labels().items():
        rules = _allowed_ingress(labels)
        open_rules = [rule for rule in rules if "from" not in rule]
        if name == "gateway":
            # From anywhere: the public port, and nothing else.
            [rule] = open_rules
            assert [p["port"] for p in rule["ports"]] == ["http"]
            assert _ports_of(deployments[name])["http"] == 8000
        else:
            assert not open_rules, f"{name} is reachable from anywhere"
    # Redis: from the services (and the exporter, and KEDA's namespace), and from no other pod.
    redis_rules = _allowed_ingress(_pod_labels()["redis"])
    peers = [peer for rule in redis_rules for peer in rule["from"]]
    for name in [*SERVICES, "redis-exporter"]:
        assert any("podSelector" in p and selects(p["podSelector"], _pod_labels()[name]) for p in peers), name
    stranger = {"app.kubernetes.io/name": "debug", "app.kubernetes.io/part-of": "voxmesh"}
    assert not any("podSelector" in p and selects(p["podSelector"], stranger) for p in peers)
    assert all(set(p) <= {"podSelector", "namespaceSelector"} for p in peers)
    for peer in peers:
        if "namespaceSelector" in peer:
            assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
    assert {p["port"] for rule in redis_rules for p in rule["ports"]} == {"redis"}


def test_network_policies_let_prometheus_reach_every_metrics_port() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    deployments = manifests_of_kind("Deployment")
    for name in [*SERVICES, "redis-exporter"]:
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        named = _ports_of(deployments[name])
        allowed = {
            named[p["port"]]
            for rule in _allowed_ingress(_pod_labels()[name])
            if rule.get("from") == [monitoring]
            for p in rule["ports"]
            if p["port"] in named
        }
        assert int(annotations["prometheus.io/port"]) in allowed, f"Prometheus cannot reach {name}'s /metrics"


def test_each_service_is_its_own_redis_user(clean_env: pytest.MonkeyPatch) -> None:
    deployments = manifests_of_kind("Deployment")
    secret = manifests_of_kind("Secret")["voxmesh-redis"]["stringData"]
    assert set(REDIS_USERS) <= set(secret)
    for name in SERVICES:
        env = k8s_env(main_container(deployments[name]))
        settings = settings_for(name, env, clean_env)
        url = urlsplit(settings.redis_url)
        assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "redis", 6379, "/0")
        assert url.username == name, f"{name} logs in as {url.username}"
        assert url.password == secret_placeholder("voxmesh-redis", name)
    # The exporter's own read-only user.
    exporter = k8s_env(main_container(deployments["redis-exporter"]))
    assert exporter["REDIS_USER"] == "exporter"
    assert exporter["REDIS_PASSWORD"] == secret_placeholder("voxmesh-redis", "exporter")
    assert exporter["REDIS_ADDR"] == "redis://redis:6379"
    exporter_args = main_container(deployments["redis-exporter"])["args"]
    assert f"--check-single-streams={EXPORTED_STREAMS}" in exporter_args


def test_redis_requires_the_acl_its_init_container_writes() -> None:
    redis = manifests_of_kind("Deployment")["redis"]["spec"]["template"]["spec"]
    [init] = redis["initContainers"]
    script, passwords, acl_file = init["command"][1:]
    volumes = {v["name"]: v for v in redis["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    assert volumes[mounts[str(Path(script).parent)]]["configMap"]["name"] == "voxmesh-redis-acl"
    assert Path(script).name == REDIS_ACL_SCRIPT.name
    assert volumes[mounts[passwords]]["secret"]["secretName"] == "voxmesh-redis"
    args = main_container(manifests_of_kind("Deployment")["redis"])["args"]
    assert args[args.index("--aclfile") + 1] == acl_file
    [container] = redis["containers"]
    redis_mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert redis_mounts[str(Path(acl_file).parent)] == mounts[str(Path(acl_file).parent)]
    # The users the script creates are the ones the Secret holds passwords for.
    text = REDIS_ACL_SCRIPT.read_text()
    assert "for user in gateway asr llm tts; do" in text
    assert set(re.findall(r"password_hash (\w+)\)", text)) == {"keda", "exporter"}


def test_gemini_key_is_a_mounted_secret_never_a_literal(clean_env: pytest.MonkeyPatch) -> None:
    for name, secret in manifests_of_kind("Secret").items():
        assert "data" not in secret, f"{name}: templates carry no values"
        values = {key: value for key, value in secret["stringData"].items() if key != "keda-username"}
        assert all(value == "" for value in values.values()), f"{name} holds a value"
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
    deploy = [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    paths = [
        DOCKERFILE,
        DOCKERIGNORE,
        COMPOSE,
        *ROOT.glob("compose.*.yaml"),
        *deploy,
        ROOT / "docs" / "deploy.md",
    ]
    for path in paths:
        assert not GOOGLE_KEY_PATTERN.search(path.read_text()), f"an API key is written in {path}"


def _validate(paths: list[Path]) -> None:
    tool = validator("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "-k", "1.32", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the CRDs (KEDA's, the Prometheus Operator's) may lack a schema.
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("WARN"):
            assert "keda.sh/" in line or "monitoring.coreos.com/" in line, line


def test_k8s_manifests_validate_offline() -> None:
    _validate(k8s_files())
    _validate(sorted((K8S.parent / "components").rglob("monitors.yaml")))


def test_overlay_renders_and_validates(tmp_path: Path) -> None:
    docs = kustomize_build(K8S_OVERLAY)
    rendered = tmp_path / "overlay.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    _validate([rendered])
    base = kustomize_build(K8S)
    # The overlay keeps everything in the base and adds to it.
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {(d["kind"], d["metadata"]["name"]) for d in base} <= names
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "voxmesh", doc["metadata"]["name"]
    deployments = of_kind(docs, "Deployment")
    for name in SERVICES:
        assert main_container(deployments[name])["image"].startswith("registry.example.com/voxmesh:")
    # Redis keeps its data on a claim, with an append-only file.
    redis = deployments["redis"]["spec"]["template"]["spec"]
    [data] = [v for v in redis["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "redis-data"}}
    assert "redis-data" in of_kind(docs, "PersistentVolumeClaim")
    args = main_container(deployments["redis"])["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and "--aclfile" in args
    # The generated ACL script's name is rewritten everywhere it is used.
    [acl] = [name for name in of_kind(docs, "ConfigMap") if name.startswith("voxmesh-redis-acl")]
    assert {"name": "acl-script", "configMap": {"name": acl}} in redis["volumes"]
    # The gateway is told the names it is reached by.
    env = k8s_env(main_container(deployments["gateway"]), docs)
    assert env["VOXMESH_GATEWAY_ALLOWED_HOSTS"] != "[]" and env["VOXMESH_GATEWAY_ALLOWED_ORIGINS"] != "[]"
    [ingress] = of_kind(docs, "Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gateway", "port": {"name": "http"}}


def test_managed_redis_component_replaces_the_dev_redis(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    overlay = tmp_path / "managed"
    overlay.mkdir()
    relative = Path(os.path.relpath(K8S.parent, overlay))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative / "base")],
                "components": [str(relative / "components" / "managed-redis")],
            }
        )
    )
    docs = kustomize_build(overlay)
    rendered = tmp_path / "managed.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    _validate([rendered])
    assert "redis" not in of_kind(docs, "Deployment") and "redis" not in of_kind(docs, "Service")
    deployments = of_kind(docs, "Deployment")
    for name in SERVICES:
        settings = settings_for(name, k8s_env(main_container(deployments[name]), docs), clean_env)
        url = urlsplit(settings.redis_url)
        assert url.scheme == "rediss" and url.hostname != "redis" and url.username == name


def test_prometheus_operator_monitors_scrape_every_metrics_port(clean_env: pytest.MonkeyPatch) -> None:
    docs = [
        doc
        for path in sorted((K8S.parent / "components").rglob("monitors.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    deployments = manifests_of_kind("Deployment")
    scraped: dict[str, int] = {}
    for monitor in of_kind(docs, "PodMonitor").values():
        for name, deployment in deployments.items():
            if selects(monitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]):
                [endpoint] = monitor["spec"]["podMetricsEndpoints"]
                assert endpoint["path"] == "/metrics"
                assert name not in scraped, f"{name} scraped twice"
                scraped[name] = _ports_of(deployment)[endpoint["port"]]
    services = manifests_of_kind("Service")
    for monitor in of_kind(docs, "ServiceMonitor").values():
        for name, service in services.items():
            if selects(monitor["spec"]["selector"], service["metadata"]["labels"]):
                [endpoint] = monitor["spec"]["endpoints"]
                [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
                scraped[name] = _ports_of(deployments[name])[port["targetPort"]]
    for name in [*SERVICES, "redis-exporter"]:
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert scraped.get(name) == int(annotations["prometheus.io/port"]), name
