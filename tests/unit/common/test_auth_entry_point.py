"""`python -m services.common.auth token` still mints tokens under its earlier module name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

pytestmark = pytest.mark.unit


def test_the_earlier_module_name_runs_the_token_command(tmp_path: Path) -> None:
    secret = tmp_path / "jwt-hs256.secret"
    secret.write_text("a development secret of enough length for HS256 tokens")
    env = {**os.environ, "PAYSAGA_AUTH_HS256_SECRET_FILE": str(secret)}
    done = subprocess.run(
        [sys.executable, "-m", "services.common.auth", "token", "--user", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    claims = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    assert claims["sub"] == "3"
