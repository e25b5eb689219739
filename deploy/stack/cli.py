"""`python -m deploy.stack [--db D] [--replicas N] [--roles R] up|down|ps|migrate|seed|check`:
make's stack.

The services run from var/ (pid files var/run, logs var/log, SQLite files var/*.db) on
the Kafka of KAFKA_BOOTSTRAP_SERVERS and, with --db postgres, the PostgreSQL of PG_PORT;
`make up` starts those first (kafka-up, pg-up). `up` migrates, seeds and starts only the
processes that are not running; `down` and `ps` find every process by its pid file.
`--roles split` runs each replica as an api and a worker process (config).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deploy.postgres.cli import runtime_from_env
from deploy.stack.config import (
    CONSOLE,
    DEFAULT_LAYOUT,
    LAYOUTS,
    ROLES_OF,
    ROOT,
    SERVICES,
    Layout,
    StackConfigError,
    replica_address,
    role_address,
)
from deploy.stack.datastores import DB_KINDS
from deploy.stack.processes import (
    ConsoleProcess,
    ServiceProcess,
    StartError,
    is_serving,
    replicas_found,
    stop_all,
)
from deploy.stack.stack import Stack, check_layout, check_roles
from services.common.security.auth_settings import AuthSettings
from services.common.security.tls import TlsSettings
from services.common.security.tokens import mint_token

VAR = ROOT / "var"
#: What the running replicas were started with, so `up` never mixes two layouts.
STATE_FILE = VAR / "run" / "stack.json"


def stack_from_args(args: argparse.Namespace) -> Stack:
    """The stack `make up` means: var/, default ports, the Kafka and PostgreSQL make runs."""
    return Stack(
        VAR,
        db=args.db,
        replicas=args.replicas,
        kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
        postgres=runtime_from_env() if args.db == "postgres" else None,
        roles=args.roles,
    )


def found_processes(replicas: int = 1, roles: Layout = DEFAULT_LAYOUT) -> list[ServiceProcess]:
    """Every process that left a pid file in var/run (and those of the first `replicas`
    replicas of each service, in layout `roles` where none ran)."""
    run_dir, logs = VAR / "run", VAR / "log"
    found = []
    for spec in SERVICES:
        base = os.environ.get(spec.address_env) or spec.default_address
        running = replicas_found(run_dir, spec.name)
        for i in sorted({*range(replicas), *running}):
            for role in ROLES_OF[running.get(i, roles)]:
                address = role_address(replica_address(base, i), role)
                found.append(
                    ServiceProcess(
                        spec, address, run_dir=run_dir, log_dir=logs, replica=i, role=role
                    )
                )
    return found


def console_process(stack: Stack | None = None) -> ConsoleProcess:
    """The console `make up` runs (var/run/console.pid, var/log/console.log), pointed at every
    replica of the stack; with auth on it calls them with an operator token of its own.
    Without a stack: the one that runs, as var/run/stack.json describes it (`ps`, `down`)."""
    env: dict[str, str] = {}
    auth = AuthSettings()
    if stack is not None and auth.enabled:
        ttl_s = int(min(auth.max_token_lifetime_s, 86400))
        env["PAYSAGA_TOKEN"] = mint_token(auth, subject="console", operator=True, ttl_s=ttl_s)
    running = _running_state() if stack is None else {}
    return ConsoleProcess(
        CONSOLE,
        os.environ.get("PAYSAGA_CONSOLE_ADDRESS") or CONSOLE.default_address,
        env,
        run_dir=VAR / "run",
        log_dir=VAR / "log",
        order_addresses=stack.admin_addresses("order") if stack else [],
        payment_addresses=stack.admin_addresses("payment") if stack else [],
        https=bool(running["tls"]) if running else None,
        ca_file=str(running.get("ca_file", "")),
    )


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _short(url: str) -> str:
    """A SQLite URL under the repository as the relative one it is equal to (cwd = repo)."""
    return url.replace(f"sqlite:///{ROOT}/", "sqlite:///")


def _security() -> dict[str, object]:
    """Whether the services start with auth and TLS (PAYSAGA_*; `make up AUTH=1 TLS=1`)."""
    auth = AuthSettings().enabled
    tls = TlsSettings()
    return {"auth": auth, "tls": tls.enabled, "ca_file": tls.ca_file if tls.enabled else ""}


def _state(stack: Stack) -> dict[str, object]:
    return {
        "db": stack.db,
        "roles": stack.roles,
        "databases": stack.database_urls,
        "bootstrap": stack.bootstrap,
        **_security(),
    }


def _running_state() -> dict[str, object]:
    running: dict[str, object] = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    return {"auth": False, "tls": False, "ca_file": "", "roles": "all", **running}


def _check_same_layout(stack: Stack) -> None:
    """Refuse to add replicas of another layout (database, Kafka) to those that run."""
    if not STATE_FILE.exists() or not any(p.pid() for p in found_processes()):
        return
    running = _running_state()
    if running != _state(stack):
        raise StackConfigError(
            f"the services that run use DB={running.get('db')} ROLES={running['roles']} on "
            f"Kafka {running.get('bootstrap')} (auth {_on(running['auth'])}, TLS "
            f"{_on(running['tls'])}), not DB={stack.db} ROLES={stack.roles} on "
            f"{stack.bootstrap} (auth {_on(_security()['auth'])}, TLS "
            f"{_on(_security()['tls'])}): stop them first (`make down`), then `make up` again"
        )


def _on(flag: object) -> str:
    return "on" if flag else "off"


def up(args: argparse.Namespace) -> int:
    stack = stack_from_args(args)
    _check_same_layout(stack)
    urls = " and ".join(_short(url) for url in stack.database_urls.values())
    print(f"==> migrating {urls}, seeding the demo data")
    stack.prepare(seed=True)
    for proc in stack.all_processes():
        if (pid := proc.pid()) is not None:
            print(f"==> {proc.name}: already running (pid {pid})")
    for proc in stack.start_services():
        print(f"==> {proc.name}: started on {proc.address}")
    console = console_process(stack)
    if (pid := console.pid()) is not None:
        print(f"==> console: already running (pid {pid})")
    else:
        console.start()
        console.wait_serving()
        print(f"==> console: started on {console.url}")
    STATE_FILE.write_text(json.dumps(_state(stack)) + "\n")
    extra = sorted(
        p.name for p in found_processes(roles=stack.roles) if p.pid() and p.replica >= args.replicas
    )
    if extra:
        print(f"==> also running (beyond REPLICAS={args.replicas}): {', '.join(extra)}")
    print_summary(stack)
    return 0


def print_summary(stack: Stack) -> None:
    """What runs where, and commands to try."""
    layout = "one process each" if stack.roles == "all" else "an api and a worker process each"
    print(
        f"\npaysaga is up: {stack.replicas} replica(s) of each service ({layout}, "
        f"ROLES={stack.roles}), DB={stack.db}"
    )
    for proc in stack.all_processes():
        print(
            f"  {proc.name:<10} {proc.address:<16} pid {proc.pid() or '-':<8} "
            f"log {_relative(proc.log_file)}"
        )
    print(f"  kafka      {stack.bootstrap}")
    console = console_process(stack)
    pid, log = console.pid() or "-", _relative(console.log_file)
    print(f"  console    {console.url:<16} pid {pid:<8} log {log}")
    metrics = [
        f"{proc.name} http://{proc.metrics_address}/metrics"
        for proc in stack.all_processes()
        if proc.metrics_address not in (None, "0")
    ]
    if metrics:
        print(f"  metrics    {'   '.join(metrics)}")
    for name, url in stack.database_urls.items():
        print(f"  {name + ' db':<10} {_short(url)}")
    order, payment = stack.order_address, stack.payment_address
    security = _security()
    tls = (
        f"-cacert {_relative(Path(str(security['ca_file'])))}" if security["tls"] else "-plaintext"
    )
    token = ' -H "authorization: Bearer $TOKEN"' if security["auth"] else ""
    grpcurl = f".tools/bin/grpcurl {tls}{token} -d"
    print(f"  auth {_on(security['auth'])}, TLS {_on(security['tls'])}")
    body = '{"user_id":1,"product_id":1,"request_id":"try-1"}'
    print("\nTry (grpcurl is in .tools/bin; a retry with the same request_id is the same order):")
    if security["auth"]:
        print("  export TOKEN=$(make -s token USER=1)    # user 1's token, valid 1 h")
    print(f"  {grpcurl} '{body}' {order} paysaga.v1.OrderService/CreateOrder")
    # With auth, a user's token sees that user only ("every user" needs the operator scope).
    mine = '{"user_id":1}' if security["auth"] else "{}"
    print(f"  {grpcurl} '{mine}' {order} paysaga.v1.OrderService/ListOrders")
    print(f"  {grpcurl} '{{\"user_id\":1}}' {payment} paysaga.v1.PaymentService/GetBalance")
    print(f"  {grpcurl} '{mine}' {order} paysaga.v1.OrderService/WatchOrders")
    # Orders are counted where they change: created by the api process, ended by the worker.
    counting = [p for p in stack.processes["order"] if p.replica == 0]
    for proc in counting:
        if proc.metrics_address not in (None, "0"):
            print(f"  curl -s http://{proc.metrics_address}/metrics | grep ^paysaga_orders_total")
    if stack.replicas > 1:
        others = ", ".join(stack.addresses("order")[1:])
        print(f"  any replica serves any call: the same on {others}")
    if stack.roles == "split":
        # The worker processes serve health and the admin API only, on ports of their own.
        order_all = ",".join(stack.admin_addresses("order"))
        payment_all = ",".join(stack.admin_addresses("payment"))
        print(f"  PAYSAGA_ORDER_ADDRESSES={order_all} PAYSAGA_PAYMENT_ADDRESSES={payment_all} \\")
        print("    .venv/bin/paysaga status    # every process: the api and the worker ones")
    print(f"\nThe console: open {console.url} (a browser on this machine)")
    print("Logs: var/log/   Status: make ps   Stop: make down")


def down(args: argparse.Namespace) -> int:
    running = [(proc, proc.pid()) for proc in [console_process(), *found_processes()]]
    if not any(pid for _, pid in running):
        print("==> no service replica is running")
    for proc, pid in running:
        if pid is not None:
            print(f"==> {proc.name}: stopping (pid {pid})")
    stop_all(proc for proc, pid in running if pid is not None)
    STATE_FILE.unlink(missing_ok=True)
    return 0


def ps(args: argparse.Namespace) -> int:
    ca_file = str(_running_state()["ca_file"])
    tls = TlsSettings(ca_file=ca_file) if ca_file else None
    roles = str(_running_state()["roles"]) if STATE_FILE.exists() else args.roles
    for proc in found_processes(args.replicas, _layout(roles)):
        pid = proc.pid()
        if pid is None:
            state = "stopped"
        else:
            serving = is_serving(proc.address, tls=tls)
            state = "SERVING" if serving else "running, not serving"
        print(f"{proc.name:<10} {state:22} pid={pid or '-':<8} {proc.address}")
    console = console_process()
    pid = console.pid()
    state = "stopped" if pid is None else "SERVING" if console.answers() else "running, not serving"
    print(f"{console.name:<10} {state:22} pid={pid or '-':<8} {console.url}")
    return 0


def migrate(args: argparse.Namespace) -> int:
    stack = stack_from_args(args)
    stack.prepare(seed=args.command == "seed")
    done = "migrated and seeded" if args.command == "seed" else "migrated"
    for name, url in stack.database_urls.items():
        print(f"==> {name}: {_short(url)} {done}")
    return 0


def check(args: argparse.Namespace) -> int:
    check_layout(args.db, args.replicas, roles=args.roles)
    return 0


def _layout(roles: str) -> Layout:
    """`roles` as written in var/run/stack.json, as a Layout ("all" if unknown)."""
    return "split" if roles == "split" else "all"


COMMANDS = {"up": up, "down": down, "ps": ps, "migrate": migrate, "seed": migrate, "check": check}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--db", choices=DB_KINDS, default="sqlite", help="(%(default)s)")
    parser.add_argument("--replicas", type=int, default=1, help="of each service (%(default)s)")
    parser.add_argument(
        "--roles",
        default=DEFAULT_LAYOUT,
        help=f"{' or '.join(LAYOUTS)}: each replica one process, or an api and a worker "
        "process (%(default)s)",
    )
    parser.add_argument("command", choices=COMMANDS)
    args = parser.parse_args(argv)
    try:
        args.roles = check_roles(args.roles)
        return COMMANDS[args.command](args)
    except (StackConfigError, StartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
