"""`python -m services.console` (and `paysaga console`): the console on uvicorn.

Where the services are: PAYSAGA_ORDER_ADDRESSES / PAYSAGA_PAYMENT_ADDRESSES, as for the
`paysaga` command; how to reach them: PAYSAGA_TLS_CA_FILE (and a client certificate) and
PAYSAGA_TOKEN, an operator's token, which the console sends on every call. It serves HTTPS
itself when PAYSAGA_TLS_CERT_FILE and PAYSAGA_TLS_KEY_FILE are set, and asks its visitors
to log in when PAYSAGA_AUTH_ENABLED is. Like the services, it refuses to serve anything
but loopback without both (services.common.security.policy), unless PAYSAGA_INSECURE=1.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from services.cli.client import Client
from services.cli.targets import BadAddress, resolve
from services.common.security.policy import InsecureStart, Security
from services.common.security.tokens import KeyConfigError
from services.console.app import create_app
from services.console.guard import Login
from services.console.settings import ConsoleSettings

log = logging.getLogger("services.console")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.console",
        description="The paysaga console: the saga as it happens, in a browser. Settings "
        "from the environment (PAYSAGA_CONSOLE_*, PAYSAGA_ORDER_ADDRESSES, ...; see "
        "docs/console.md).",
    )
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ConsoleSettings()
    security = Security()
    try:
        targets = resolve(None, None)
        host, port = settings.host_port()
        security.check_address(settings.address)
        login = Login(security.auth)
    except (ValueError, BadAddress, KeyConfigError, InsecureStart) as exc:
        sys.stderr.write(f"console: error: {exc}\n")
        return 2
    tls = security.tls
    client = Client(targets, settings.call_timeout_s)
    app = create_app(settings, client, login, https=tls.enabled)
    scheme = "https" if tls.enabled else "http"
    log.info(
        "console on %s://%s (order %s, payment %s)",
        scheme,
        settings.address,
        ",".join(targets.order),
        ",".join(targets.payment),
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            ssl_certfile=tls.cert_file or None,
            ssl_keyfile=tls.key_file or None,
            log_level="warning",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
    finally:
        client.close()
    return 0
