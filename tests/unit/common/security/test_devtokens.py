"""The development-token command mints tokens the verifier accepts."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from services.common.security.auth_settings import AuthSettings
from services.common.security.devtokens import parse_ttl, token_command
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
