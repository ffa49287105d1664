"""Session tokens: minting and verifying (expiry, audience, signature), where the secret comes from, the
gateway's auth modes, how a client's token is found and kept out of logs, `voxmesh token`, `voxmesh up`."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from services.cli import main as cli_main
from services.gateway.access import (
    Access,
    auth_required,
    chosen_subprotocol,
    host_allowed,
    is_loopback,
    offered_token,
)
from services.gateway.settings import GatewaySettings
from services.up import Stack
from shared.auth import MissingSecretError, TokenError, Tokens, TokenSettings, redact

pytestmark = pytest.mark.unit

SECRET = "s" * 64
OTHER_SECRET = "o" * 64


def _tokens(audience: str = "voxmesh", secret: str = SECRET) -> Tokens:
    return Tokens(secret.encode(), audience=audience, ttl_s=600)


# ---- mint and verify


def test_a_minted_token_verifies_with_its_claims() -> None:
    tokens = _tokens()
    now = time.time()
    claims = tokens.verify(tokens.mint(subject="alice", now=now))
    assert claims["aud"] == "voxmesh" and claims["sub"] == "alice"
    assert claims["iat"] == int(now) and claims["exp"] == int(now) + 600
    assert "sub" not in tokens.verify(tokens.mint())


def test_ttl_sets_the_expiry_and_is_bounded() -> None:
    tokens = _tokens()
    claims = tokens.verify(tokens.mint(ttl_s=30))
    assert claims["exp"] - claims["iat"] == 30
    for bad in (0, -5, 86_401):
        with pytest.raises(ValueError):
            tokens.mint(ttl_s=bad)


def test_expired_token_is_refused() -> None:
    tokens = _tokens()
    old = tokens.mint(ttl_s=60, now=time.time() - 3600)
    with pytest.raises(TokenError, match="token expired"):
        tokens.verify(old)


def test_wrong_audience_bad_signature_and_garbage_are_invalid() -> None:
    tokens = _tokens()
    forged = [
        _tokens(audience="someone-else").mint(),
        _tokens(secret=OTHER_SECRET).mint(),
        tokens.mint()[:-4] + "AAAA",
        "not-a-token",
        "",
        "x" * 5000,
        jwt.encode({"aud": "voxmesh", "iat": int(time.time())}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode({"aud": "voxmesh", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),  # no iat
        jwt.encode({"iat": int(time.time()), "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
        jwt.encode({"aud": "voxmesh", "iat": 1, "exp": 2**40}, SECRET, algorithm="HS384"),  # other algorithm
        jwt.encode({"aud": "voxmesh", "iat": 1, "exp": 2**40}, "", algorithm="none"),  # unsigned
    ]
    for token in forged:
        with pytest.raises(TokenError, match="token invalid"):
            tokens.verify(token)


def test_token_error_never_holds_the_token() -> None:
    token = _tokens(secret=OTHER_SECRET).mint()
    with pytest.raises(TokenError) as caught:
        _tokens().verify(token)
    assert token not in str(caught.value) and token not in repr(caught.value)


def test_the_key_stays_out_of_reprs() -> None:
    assert SECRET not in repr(_tokens())
    settings = TokenSettings(secret=SecretStr(SECRET), secret_file=None)
    assert SECRET not in repr(settings) and SECRET not in str(settings)


# ---- the secret


def test_secret_from_env_or_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert TokenSettings().key() is None
    clean_env.setenv("VOXMESH_TOKEN_SECRET", SECRET)
    assert TokenSettings().key() == SECRET.encode()
    clean_env.delenv("VOXMESH_TOKEN_SECRET")
    secret_file = tmp_path / "secret"
    secret_file.write_text(OTHER_SECRET + "\n")
    clean_env.setenv("VOXMESH_TOKEN_SECRET_FILE", str(secret_file))
    clean_env.setenv("VOXMESH_TOKEN_TTL_S", "120")
    settings = TokenSettings()
    assert settings.key() == OTHER_SECRET.encode()
    tokens = Tokens.from_settings(settings)
    assert tokens is not None and tokens.ttl_s == 120


def test_short_empty_or_unreadable_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MissingSecretError, match="at least 32 bytes"):
        TokenSettings(secret=SecretStr("short"), secret_file=None).key()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(MissingSecretError, match="at least 32 bytes"):
        TokenSettings(secret=None, secret_file=empty).key()
    with pytest.raises(MissingSecretError, match="cannot read"):
        TokenSettings(secret=None, secret_file=tmp_path / "missing").key()
    with pytest.raises(MissingSecretError):
        Tokens(b"short")


# ---- auth modes and startup


def test_auto_requires_tokens_beyond_loopback_only() -> None:
    assert not auth_required("auto", "127.0.0.1")
    assert not auth_required("auto", "localhost")
    assert not auth_required("auto", "::1")
    assert auth_required("auto", "0.0.0.0")
    assert auth_required("auto", "::")
    assert auth_required("auto", "192.168.1.20")
    assert auth_required("required", "127.0.0.1")
    assert not auth_required("off", "0.0.0.0")


def _gateway_settings(**values: object) -> GatewaySettings:
    tokens = values.pop("tokens", TokenSettings(secret=None, secret_file=None))
    return GatewaySettings(tokens=tokens, **values)  # type: ignore[arg-type]


def test_a_gateway_beyond_loopback_without_a_secret_does_not_start(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingSecretError, match="VOXMESH_TOKEN_SECRET") as caught:
        Access(_gateway_settings(http_host="0.0.0.0"))
    assert "0.0.0.0" in str(caught.value) and "VOXMESH_GATEWAY_AUTH=off" in str(caught.value)
    with pytest.raises(MissingSecretError, match="AUTH=required"):
        Access(_gateway_settings(auth="required"))
    with pytest.raises(MissingSecretError, match="TOKEN_ENDPOINT"):
        Access(_gateway_settings(token_endpoint=True))
    assert not Access(_gateway_settings()).required  # loopback: open, as before
    assert not Access(_gateway_settings(http_host="0.0.0.0", auth="off")).required  # said explicitly
    with_secret = TokenSettings(secret=SecretStr(SECRET), secret_file=None)
    assert Access(_gateway_settings(http_host="0.0.0.0", tokens=with_secret)).required


def test_token_refusal_reasons(clean_env: pytest.MonkeyPatch) -> None:
    access = Access(
        _gateway_settings(auth="required", tokens=TokenSettings(secret=SecretStr(SECRET), secret_file=None))
    )
    good = _tokens().mint()
    assert access.token_refusal(["voxmesh", f"token.{good}"], None) is None
    assert access.token_refusal([], good) is None
    assert access.token_refusal([], None) == "token required"
    assert access.token_refusal(["voxmesh"], "") == "token required"
    assert access.token_refusal([f"token.{good}x"], None) == "token invalid"
    assert access.token_refusal([], _tokens().mint(ttl_s=1, now=time.time() - 100)) == "token expired"
    assert Access(_gateway_settings()).token_refusal([], None) is None  # not required on loopback


# ---- the token on the wire and in logs


def test_the_token_comes_from_the_subprotocol_first_then_the_query() -> None:
    assert offered_token(["voxmesh", "token.abc"], "query") == "abc"
    assert offered_token(["voxmesh"], "query") == "query"
    assert offered_token([], None) is None
    assert offered_token([], "") is None


def test_only_voxmesh_is_echoed_never_the_token() -> None:
    assert chosen_subprotocol(["voxmesh", "token.abc"]) == "voxmesh"
    assert chosen_subprotocol(["token.abc"]) is None
    assert chosen_subprotocol([]) is None


def test_redact_takes_tokens_out_of_log_lines() -> None:
    token = _tokens().mint()
    line = f'127.0.0.1:5 - "WebSocket /v1/realtime?output_sample_rate=16000&token={token}" [accepted]'
    assert token not in redact(line) and "token=***" in redact(line)
    assert redact(f"/v1/realtime?token={token}&x=1").endswith("token=***&x=1")
    assert token not in redact(f"offered ['voxmesh', 'token.{token}']")
    assert token not in redact(f"bare {token} here")
    assert redact("GET /readyz 200") == "GET /readyz 200"


def test_loopback_and_host_names() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for other in ("0.0.0.0", "::", "10.0.0.1", "evil.example", "", None, "localhost.evil.example"):
        assert not is_loopback(other), other
    assert host_allowed("localhost:8000", [])
    assert host_allowed("[::1]:8000", [])
    assert host_allowed("Voice.Example.org", ["voice.example.org"])
    assert not host_allowed("evil.example:8000", ["voice.example.org"])
    assert not host_allowed(None, ["*"])
    assert not host_allowed("bad[host", [])


# ---- the commands


def test_voxmesh_token_prints_a_token_the_gateway_accepts(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("VOXMESH_TOKEN_SECRET", SECRET)
    assert cli_main(["token", "--ttl", "90", "--subject", "bench"]) == 0
    token = capsys.readouterr().out.strip()
    claims = _tokens().verify(token)
    assert claims["sub"] == "bench" and claims["exp"] - claims["iat"] == 90


def test_voxmesh_token_without_a_secret_says_how_to_set_one(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["token"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "VOXMESH_TOKEN_SECRET" in captured.err
    clean_env.setenv("VOXMESH_TOKEN_SECRET", SECRET)
    assert cli_main(["token", "--ttl", "0"]) == 1


def test_voxmesh_up_serves_the_page_tokens_on_loopback_only(clean_env: pytest.MonkeyPatch) -> None:
    local = Stack("127.0.0.1", 9000).gateway_env()
    assert local["VOXMESH_GATEWAY_TOKEN_ENDPOINT"] == "true"
    assert local["VOXMESH_GATEWAY_METRICS_PORT"] == "9004"
    assert len(local["VOXMESH_TOKEN_SECRET"]) >= 32  # this run's own secret
    assert Stack("127.0.0.1", 9000).gateway_env()["VOXMESH_TOKEN_SECRET"] != local["VOXMESH_TOKEN_SECRET"]
    public = Stack("0.0.0.0", 9000).gateway_env()
    assert "VOXMESH_GATEWAY_TOKEN_ENDPOINT" not in public and "VOXMESH_TOKEN_SECRET" not in public
    clean_env.setenv("VOXMESH_TOKEN_SECRET", SECRET)
    assert "VOXMESH_TOKEN_SECRET" not in Stack("127.0.0.1", 9000).gateway_env()  # the operator's wins
    clean_env.setenv("VOXMESH_GATEWAY_TOKEN_ENDPOINT", "false")
    assert "VOXMESH_GATEWAY_TOKEN_ENDPOINT" not in Stack("127.0.0.1", 9000).gateway_env()
