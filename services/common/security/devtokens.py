"""The development-token command: `token --user N [--operator] [--ttl 1h]` prints a bearer token.

`python -m services.common.security.devtokens token --user N [--operator] [--ttl 1h]` (what
`make token` runs), and `paysaga token ...`. The signing key comes from the PAYSAGA_AUTH_*
settings (services.common.security.auth_settings); when none names a key, from the
development secret `make secrets` writes, var/secrets/jwt-hs256.secret under the current
directory (run from the project, as `make token` is), and from nowhere else.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jwt

from services.common.security.auth_settings import AuthSettings
from services.common.security.keys import KeyConfigError
from services.common.security.tokens import mint_token

#: Where `make secrets` writes the development HS256 secret, relative to the project.
DEV_SECRET = Path("var/secrets/jwt-hs256.secret")


def signing_settings(settings: AuthSettings, cwd: Path | None = None) -> AuthSettings:
    """`settings` as they are if one names a signing key; else with the development secret
    under `cwd` (the current directory) as the HS256 secret file, if `make secrets` wrote it
    there; a KeyConfigError saying what to set or run otherwise."""
    if settings.hs256_secret or settings.hs256_secret_file or settings.private_key_file:
        return settings
    here = cwd or Path.cwd()
    found = here / DEV_SECRET
    if found.is_file():
        return settings.model_copy(update={"hs256_secret_file": str(found)})
    raise KeyConfigError(
        f"no signing key: no PAYSAGA_AUTH_HS256_SECRET_FILE, PAYSAGA_AUTH_HS256_SECRET or "
        f"PAYSAGA_AUTH_PRIVATE_KEY_FILE is set, and there is no {DEV_SECRET} under the current "
        f"directory ({here}): run this from the project after "
        f"`make secrets` (or `make up AUTH=1`), or set one of those"
    )


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `1h`, `7d` or a number of seconds -> seconds."""
    found = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", text)
    if not found or int(found.group(1)) <= 0:
        raise ValueError(f"--ttl {text!r}: give a duration such as 90s, 15m, 1h or 7d")
    return int(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def token_command(
    argv: list[str] | None = None, prog: str = "python -m services.common.security.devtokens"
) -> int:
    """`token --user N [--operator] [--ttl 1h]`: print a development token; the exit status.

    For the paysaga command too: `paysaga token ...` is `token_command(argv, prog="paysaga")`.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Mint a development bearer token (keys from PAYSAGA_AUTH_* settings).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a token for a user (and/or an operator)")
    token.add_argument("--user", help="the user id the token acts for (its subject)")
    token.add_argument("--operator", action="store_true", help="add the operator scope")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--json", action="store_true", help="print the claims too, as JSON")
    args = parser.parse_args(argv)
    user = (args.user or "").strip()
    if user and not re.fullmatch(r"[1-9][0-9]*", user):
        parser.error(f"--user {user!r}: give a user id, a positive integer")
    if not user and not args.operator:
        parser.error("give --user N (and/or --operator)")
    try:
        ttl_s = parse_ttl(args.ttl)
        settings = signing_settings(AuthSettings())
        text = mint_token(settings, subject=user or "operator", operator=args.operator, ttl_s=ttl_s)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.json:
        unverified = jwt.decode(text, options={"verify_signature": False})
        sys.stdout.write(json.dumps({"token": text, **unverified}) + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(token_command())
