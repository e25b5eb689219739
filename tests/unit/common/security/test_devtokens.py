"""The development-token command mints tokens the verifier accepts."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from services.common.security.auth_settings import AuthSettings
from services.common.security.devtokens import parse_ttl, signing_settings, token_command
from services.common.security.tokens import TokenVerifier

pytestmark = pytest.mark.unit

SECRET = "s" * 40


def test_parse_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "1h", "7d")] == [90, 90, 900, 3600, 604800]
    with pytest.raises(ValueError, match="duration"):
        parse_ttl("soon")


def test_token_command_mints_a_token_the_verifier_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret").write_text(SECRET)
    monkeypatch.setenv("PAYSAGA_AUTH_HS256_SECRET_FILE", str(tmp_path / "secret"))
    assert token_command(["token", "--user", "4", "--operator", "--ttl", "10m"]) == 0
    token = capsys.readouterr().out.strip()
    caller = TokenVerifier(AuthSettings(enabled=True)).verify(token)
    assert (caller.user_id, caller.operator) == (4, True)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert 590 <= exp - time.time() <= 600


def test_token_command_finds_the_development_secret_from_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("HS256_SECRET", "HS256_SECRET_FILE", "PRIVATE_KEY_FILE"):
        monkeypatch.delenv(f"PAYSAGA_AUTH_{name}", raising=False)
    (tmp_path / "var" / "secrets").mkdir(parents=True)
    (tmp_path / "var" / "secrets" / "jwt-hs256.secret").write_text(SECRET + "\n")
    monkeypatch.chdir(tmp_path)
    assert token_command(["token", "--user", "7"]) == 0
    token = capsys.readouterr().out.strip()
    caller = TokenVerifier(AuthSettings(enabled=True, hs256_secret=SECRET)).verify(token)
    assert (caller.user_id, caller.operator) == (7, False)


def test_token_command_says_where_it_looked_when_there_is_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("HS256_SECRET", "HS256_SECRET_FILE", "PRIVATE_KEY_FILE"):
        monkeypatch.delenv(f"PAYSAGA_AUTH_{name}", raising=False)
    (tmp_path / "secrets").mkdir()  # not the project's var/secrets: not looked at
    (tmp_path / "secrets" / "jwt-hs256.secret").write_text(SECRET)
    monkeypatch.chdir(tmp_path)
    assert token_command(["token", "--user", "7"]) == 2
    error = capsys.readouterr().err
    assert "var/secrets/jwt-hs256.secret under the current directory" in error
    assert str(tmp_path) in error and "make secrets" in error


def test_a_key_setting_wins_over_the_development_secret(tmp_path: Path) -> None:
    (tmp_path / "var" / "secrets").mkdir(parents=True)
    (tmp_path / "var" / "secrets" / "jwt-hs256.secret").write_text("d" * 40)
    given = AuthSettings(hs256_secret=SECRET)
    assert signing_settings(given, tmp_path) is given
    found = signing_settings(AuthSettings(hs256_secret="", hs256_secret_file=""), tmp_path)
    assert found.secret() == "d" * 40
