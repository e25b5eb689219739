"""`paysaga`: the operators' command. It calls each service's admin API (paysaga.admin.v1)
on its gRPC port: per-order timelines, stuck sagas, held money, dead letters, and each
replica's status.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc

from services.cli import commands, deadletters, orders
from services.cli.client import Client, CommandError
from services.cli.targets import CONSUMER_OF, DEFAULTS, ENV, LAYOUTS, BadAddress, resolve
from services.common.observability.build import package_version
from services.common.security.devtokens import token_command

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """30s, 5m, 1.5h, 2d, or a number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_since(text: str) -> datetime:
    """A duration ago (1h) or a moment (2026-11-26T09:00:00, UTC unless it says)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (1h) nor a time (2026-11-26T09:00:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _topic(text: str) -> str:
    if text not in CONSUMER_OF:
        raise argparse.ArgumentTypeError(
            f"no saga topic {text!r}: use one of {', '.join(sorted(CONSUMER_OF))}"
        )
    return text


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paysaga",
        description="Operate paysaga: per-order timelines, stuck sagas, dead letters and "
        "each replica's status, through the services' admin API (paysaga.admin.v1).",
        epilog="Times are UTC. Exit status: 0 done, 1 a call failed (message says why), "
        "2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"paysaga {package_version()}")
    for service in ("order", "payment"):
        parser.add_argument(
            f"--{service}",
            metavar="ADDR[,ADDR...]",
            help=f"the {service} service's replicas (default ${ENV[service]}, "
            f"else {DEFAULTS[service]})",
        )
    parser.add_argument(
        "--replicas",
        type=_positive_int,
        default=1,
        metavar="N",
        help="also call the replicas `make up REPLICAS=N` starts (port + 100*i)",
    )
    parser.add_argument(
        "--roles",
        choices=LAYOUTS,
        default=None,
        help="split: also call each replica's worker process, as `make up ROLES=split` "
        "starts them (port + 10); default: the layout of the stack `make up` runs here "
        "(var/run/stack.json), else all",
    )
    parser.add_argument(
        "--timeout",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="per call (default 5s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "token",
        add_help=False,
        help="print a development token: token --user N [--operator] [--ttl 1h]",
    )

    order = sub.add_parser("order", help="one order").add_subparsers(
        dest="order_command", required=True, metavar="SUBCOMMAND"
    )
    timeline = order.add_parser(
        "timeline",
        help="every step of an order's saga, in time order",
        description="Every step both services recorded of the order: its creation, each "
        "event produced and applied (topic, partition, offset, id, replica), dead letters, "
        "redrives, with the time between steps.",
    )
    timeline.add_argument("order_id", metavar="ORDER_ID")
    _add_json(timeline)
    timeline.set_defaults(run=commands.order_timeline)

    orders_sub = sub.add_parser("orders", help="many orders").add_subparsers(
        dest="orders_command", required=True, metavar="SUBCOMMAND"
    )
    stuck = orders_sub.add_parser(
        "stuck",
        help="orders not terminal past a threshold, with what each waits for",
        description="Orders still CREATED longer than --older-than, oldest first.",
    )
    stuck.add_argument(
        "--older-than",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="default 30s",
    )
    stuck.add_argument("--limit", type=_positive_int, default=100, help="default 100")
    _add_json(stuck)
    stuck.set_defaults(run=orders.orders_stuck)

    held = orders_sub.add_parser(
        "held",
        help="FAILED orders charged and not refunded, from what both services know",
        description="FAILED orders whose charge the Order service has seen and whose refund "
        "it has not, held longer than --older-than (oldest first), each with whether the "
        "Payment service holds money for it, and when its OrderFailed was last announced "
        "again (ORDER_REFUND_REANNOUNCE_S).",
    )
    held.add_argument(
        "--older-than",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="default 30s",
    )
    held.add_argument("--limit", type=_positive_int, default=100, help="default 100")
    _add_json(held)
    held.set_defaults(run=orders.orders_held)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True, metavar="SUBCOMMAND"
    )
    listing = dlq.add_parser(
        "list", help="dead letters, newest first", description="Dead letters, newest first."
    )
    listing.add_argument("--topic", type=_topic, help="only this original topic")
    listing.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="a duration ago (1h) or a time"
    )
    listing.add_argument("--limit", type=_positive_int, default=100, help="default 100")
    _add_json(listing)
    listing.set_defaults(run=deadletters.dlq_list)

    show = dlq.add_parser(
        "show",
        help="one dead letter: reason, headers, payload",
        description="One dead letter: where it came from, why, its headers, and its payload "
        "decoded with the contract where it decodes (hex otherwise).",
    )
    show.add_argument("id", metavar="ID", help="e.g. payments:3:17 (see `dlq list`)")
    _add_json(show)
    show.set_defaults(run=deadletters.dlq_show)

    redrive = dlq.add_parser(
        "redrive",
        help="send dead letters back to their topic, to be applied once",
        description="Send dead letters back to their original topic, oldest first (per "
        "partition in the original records' order). Each is applied at most once, however "
        "often it is redriven; who and when is recorded. A record redriven <SVC>_REDRIVE_MAX "
        "times (3) is refused (--all leaves it out and says so).",
    )
    redrive.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids")
    redrive.add_argument(
        "--all", action="store_true", help="every dead letter of --topic not redriven yet"
    )
    redrive.add_argument("--topic", type=_topic, help="with --all: the original topic")
    redrive.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: show what would be sent, in order, and why",
    )
    redrive.add_argument(
        "--by",
        default=os.environ.get("USER") or _user(),
        help="who asks, recorded with the redrive (default $USER)",
    )
    _add_json(redrive)
    redrive.set_defaults(run=deadletters.dlq_redrive)

    state = sub.add_parser(
        "status",
        help="every replica: health, outbox, lag, dead letters, last batch",
        description="Every replica of both services: its gRPC health per name, outbox rows "
        "pending and parked, consumer lag, dead letters, held money (HELD: FAILED orders "
        "charged and not refunded, as the Order service sees them; on a payment row, how "
        "many of those the Payment service holds money for), last batch applied, and what "
        "looks stuck. Exit status 1 if a replica cannot be reached.",
    )
    _add_json(state)
    state.set_defaults(run=commands.status)

    console = sub.add_parser(
        "console",
        help="serve the web console on PAYSAGA_CONSOLE_ADDRESS (default 127.0.0.1:8088)",
        description="The web console (docs/console.md): the saga live, orders, stuck and held "
        "money, dead letters and redrive, replicas; pointed at --order/--payment.",
    )
    console.set_defaults(run=serve_console)
    return parser


def serve_console(client: Client, args: argparse.Namespace) -> str:
    """`python -m services.console` in this process's place, pointed at the replicas given
    (the console imports this package, so this package only starts it)."""
    env = {**os.environ}
    for service in ("order", "payment"):
        env[ENV[service]] = ",".join(client.targets.of(service))
    os.execve(sys.executable, [sys.executable, "-m", "services.console"], env)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _fail(message: str) -> None:
    sys.stderr.write(f"paysaga: error: {message}\n")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (messages, never a traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:  # paysaga token --user N [--operator] [--ttl 1h]
        return token_command(argv, prog="paysaga")
    args = build_parser().parse_args(argv)
    try:
        targets = resolve(args.order, args.payment, args.replicas, args.roles)
    except BadAddress as exc:
        _fail(str(exc))
        return 2
    client = Client(targets, args.timeout)
    command: Callable[..., str | tuple[str, int]] = args.run
    try:
        result = command(client, args)
    except CommandError as exc:
        _fail(str(exc))
        return 1
    except grpc.RpcError as exc:
        message = exc.details() or exc.code().name  # type: ignore[attr-defined]
        _fail(message)
        return 1
    finally:
        client.close()
    text, code = result if isinstance(result, tuple) else (result, 0)
    sys.stdout.write(text + "\n")
    return code
