"""The console (`paysaga console`) in headless Chromium, against the real services in their
own processes: Playwright for Python drives Debian's `chromium` (CHROMIUM=path, else the
one on PATH; `make check-chromium` says how to install it). The console runs as the stack
launcher runs it (deploy.stack.processes.ConsoleProcess) on a free port, pointed at this
module's stack. Each test saves a screenshot under var/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.config import CONSOLE, ROOT, free_ports
from deploy.stack.datastores import fresh_databases
from deploy.stack.processes import ConsoleProcess
from deploy.stack.stack import Stack
from services.common.messaging.cloudevents import EventMeta
from services.common.security.auth_settings import AuthSettings
from services.common.security.tls import CA_CERT, JWT_SECRET, SERVER_CERT, SERVER_KEY, dev_secrets
from services.common.security.tokens import mint_token
from services.saga.topics import PAYMENTS
from tests.e2e.conftest import ORDER, Grpcurl, GrpcurlStack, Paused, running, wait_status

pytestmark = pytest.mark.e2e

SCREENSHOTS = ROOT / "var" / "screenshots"
#: The longest a page waits for something live to show (the console pushes every second).
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)


def chromium() -> str:
    """Debian's chromium (or CHROMIUM); in CI a missing one fails the run, else skips loudly."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or ""
    if found and Path(found).exists():
        return found
    message = (
        "chromium not found: install Debian's chromium package (apt-get install chromium) "
        "or set CHROMIUM=/path"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


@pytest.fixture(scope="module")
def console(stack: GrpcurlStack) -> Iterator[ConsoleProcess]:
    [port] = free_ports(1)
    process = ConsoleProcess(
        CONSOLE,
        f"127.0.0.1:{port}",
        {"PAYSAGA_CONSOLE_STATUS_POLL_S": "1", "PAYSAGA_CONSOLE_CALL_TIMEOUT_S": "2"},
        run_dir=stack.stack.run_dir,
        log_dir=stack.stack.log_dir,
        order_addresses=stack.stack.addresses("order"),
        payment_addresses=stack.stack.addresses("payment"),
    )
    process.start()
    try:
        process.wait_serving()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, console: ConsoleProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def live(page: Page) -> None:
    """Wait until the page's stream is open."""
    expect(page.locator("[data-live-status]")).to_have_text("live")


def new_order(stack: GrpcurlStack, user_id: int, key: str, product_id: int = 1) -> str:
    body = {"user_id": user_id, "product_id": product_id, "request_id": f"{key}-{uuid.uuid4()}"}
    return str(stack.order.call(f"{ORDER}/CreateOrder", body)["order"]["id"])  # type: ignore[index]


def test_an_order_appears_live_on_the_flow_and_orders_pages(
    stack: GrpcurlStack, page: Page
) -> None:
    page.goto("/")
    live(page)
    page.keyboard.press("Tab")  # keyboard first: the skip link, then the pages
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Live flow")).to_be_focused()
    orders = page.context.new_page()
    orders.goto("/orders")
    live(orders)
    order_id = new_order(stack, 2, "console-live")
    row = orders.locator(f'tr[data-id="{order_id}"]')
    expect(row).to_be_visible()  # pushed, not reloaded
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    expect(page.locator('[data-lane="order-created"] [data-field="count"]')).not_to_have_text("0")
    expect(page.locator('[data-flow="completed"]')).not_to_have_text("0")
    expect(page.locator('[data-lane="orders"] [data-field="count"]')).not_to_have_text("0")
    # A failure is highlighted with its reason, on both pages.
    failed_id = new_order(stack, 1, "console-unaffordable", product_id=5)
    expect(orders.locator(f'tr[data-id="{failed_id}"] .badge')).to_have_text("FAILED")
    expect(orders.locator(f'tr[data-id="{failed_id}"] .reason')).to_contain_text(
        "insufficient balance"
    )
    expect(page.locator('[data-flow="failed"]')).not_to_have_text("0")
    expect(page.locator('[data-flow="reasons"]')).to_contain_text("insufficient balance")
    expect(
        page.locator(f'[data-flow="recent_failures"] a[href="/orders/{failed_id}"]')
    ).to_be_visible()
    screenshot(orders, "console-orders")
    screenshot(page, "console-flow")


def test_the_timeline_shows_every_step(stack: GrpcurlStack, page: Page) -> None:
    order_id = new_order(stack, 3, "console-timeline")
    assert wait_status(stack.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    page.goto(f"/orders/{order_id}")
    expect(page.locator("h1")).to_contain_text(order_id)
    expect(page.locator("h1 .badge")).to_have_text("COMPLETED")
    steps = page.locator("tr[data-step]")
    # Created, then each event produced by one service and applied by the other.
    expect(steps.filter(has_text="order created")).to_have_count(1)
    for topic, event in (
        ("orders", "OrderPurchased"),
        ("payments", "PaymentProcessed"),
        ("transactions", "TransactionRecorded"),
    ):
        expect(steps.filter(has_text="produced").filter(has_text=event)).not_to_have_count(0)
        applied = steps.filter(has_text="applied").filter(has_text=f"{topic}[")
        expect(applied).to_have_count(1)
        expect(applied.locator("td").nth(6)).not_to_be_empty()  # produced→applied latency
    # Each event is shown by its id's random end, which pairs produced with applied: the
    # three applied events show three different ids (ids begin with their time).
    shown = steps.filter(has_text="applied").locator("span.muted.id").all_inner_texts()
    assert len(shown) == 3 and len(set(shown)) == 3, shown
    expect(page.locator(".money-charge")).to_contain_text("-50.00")
    expect(page.get_by_text("no deadline runs")).to_be_visible()
    screenshot(page, "console-order")


def test_a_poison_record_is_shown_and_redriven_once_through_the_confirmation(
    stack: GrpcurlStack, page: Page
) -> None:
    order_id = str(uuid.uuid4())
    meta = EventMeta.new(ce_type=PAYMENTS.ce_type, source=PAYMENTS.source, subject=order_id)
    producer = Producer({"bootstrap.servers": stack.stack.bootstrap})
    producer.produce("payments", key=b"2", value=b"\x08\x96\x01garbage\xff", headers=meta.headers())
    assert producer.flush(30) == 0

    page.goto("/dead-letters?topic=payments")
    live(page)
    entry = page.locator("tr", has=page.locator(f'a[href="/orders/{order_id}"]'))
    expect(entry).to_have_count(1)  # pushed once consumed and dead-lettered
    expect(entry.locator(".reason")).to_contain_text("not a valid paysaga.v1.PaymentProcessed")
    letter_id = entry.locator("a.id").first.inner_text()

    entry.locator("a.id").first.click()
    expect(page.locator("h1")).to_contain_text(letter_id)
    expect(page.get_by_text(f"{order_id}").first).to_be_visible()
    expect(page.locator("pre.hex")).to_contain_text("67 61 72 62 61 67 65")  # "garbage"

    refused = page.request.post("/dead-letters/redrive", form={"id": letter_id})
    assert refused.status == 403, "a POST without the session's CSRF token is refused"

    page.get_by_role("link", name="Redrive…").click()
    expect(page.locator("h1")).to_contain_text("Redrive")
    expect(page.locator("tr.added")).to_contain_text(f"redrive:{letter_id}")
    screenshot(page, "console-redrive-confirm")
    page.get_by_role("button", name="Send it back to payments").click()
    expect(page).to_have_url(f"{page.url.split('/dead-letters')[0]}/dead-letters/{letter_id}")
    expect(page.locator(".notice")).to_contain_text("Redriven by")
    expect(page.locator(".notice")).to_contain_text("1 dead letter(s)")
    expect(page.locator(".facts")).to_contain_text("1 time(s)")
    expect(page.locator(".facts")).to_contain_text("(console, auth off)")
    page.reload()  # the redrive was a POST answered by a redirect: a reload sends nothing
    expect(page.locator(".facts")).to_contain_text("1 time(s)")

    # Still poison: its copy is dead-lettered again, once.
    page.goto("/dead-letters?topic=payments")
    expect(page.locator("tr", has=page.locator(f'a[href="/orders/{order_id}"]'))).to_have_count(2)
    screenshot(page, "console-dead-letters")


def test_a_frozen_payment_service_shows_the_order_in_stuck(stack: GrpcurlStack, page: Page) -> None:
    with Paused(stack.stack, "payment"):
        order_id = new_order(stack, 4, "console-stuck")
        page.goto("/stuck?older=1s")
        row = page.locator(f'tr[data-id="{order_id}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text("payment decision")
        screenshot(page, "console-stuck")
    assert wait_status(stack.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    expect(page.locator(f'tr[data-id="{order_id}"]')).to_have_count(0)  # gone once ended


def test_a_stopped_replica_shows_as_unreachable(stack: GrpcurlStack, page: Page) -> None:
    payment = stack.stack.address("payment")
    page.goto("/replicas")
    live(page)
    replica = page.locator(f'li[data-address="{payment}"]')
    expect(replica).not_to_have_class(re.compile("state-unreachable"))
    stack.stack.process("payment").stop()
    try:
        expect(replica).to_have_class("replica state-unreachable")
        expect(replica).to_contain_text("cannot reach the payment service")
        expect(replica).to_contain_text("make up")
        order = page.locator(f'li[data-address="{stack.stack.address("order")}"]')
        expect(order).not_to_have_class(re.compile("state-unreachable"))
        screenshot(page, "console-replicas")
    finally:
        stack.stack.restart("payment")
    expect(replica).not_to_have_class(re.compile("state-unreachable"))


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str
) -> Iterator[tuple[GrpcurlStack, ConsoleProcess, AuthSettings]]:
    """A stack with auth and TLS (`make up AUTH=1 TLS=1`) and its console over HTTPS."""
    home = tmp_path_factory.mktemp("secured-console")
    secrets = home / "secrets"
    dev_secrets(secrets)
    env = {
        "PAYSAGA_AUTH_ENABLED": "1",
        "PAYSAGA_AUTH_HS256_SECRET_FILE": str(secrets / JWT_SECRET),
        "PAYSAGA_TLS_CERT_FILE": str(secrets / SERVER_CERT),
        "PAYSAGA_TLS_KEY_FILE": str(secrets / SERVER_KEY),
        "PAYSAGA_TLS_CA_FILE": str(secrets / CA_CERT),
    }
    auth = AuthSettings(hs256_secret_file=str(secrets / JWT_SECRET))
    stack = Stack(home, ports="free", detach=False, env=env)
    with running(stack, grpcurl_binary) as started:
        [port] = free_ports(1)
        operator = mint_token(auth, subject="console", operator=True, ttl_s=3600)
        process = ConsoleProcess(
            CONSOLE,
            f"127.0.0.1:{port}",
            {**env, "PAYSAGA_TOKEN": operator},
            run_dir=stack.run_dir,
            log_dir=stack.log_dir,
            order_addresses=stack.addresses("order"),
            payment_addresses=stack.addresses("payment"),
        )
        process.start()
        try:
            process.wait_serving()
            user = mint_token(auth, subject="5", ttl_s=600)
            options = ("-cacert", str(secrets / CA_CERT), "-H", f"authorization: Bearer {user}")
            started.order = Grpcurl(grpcurl_binary, stack.order_address, options)
            yield started, process, auth
        finally:
            process.stop()


def test_with_auth_and_tls_an_operator_logs_in_and_sees_the_saga(
    browser: Browser, secured: tuple[GrpcurlStack, ConsoleProcess, AuthSettings]
) -> None:
    stack, process, auth = secured
    assert process.url.startswith("https://")
    # The development CA is not the browser's: trust it for this context only.
    context = browser.new_context(base_url=process.url, ignore_https_errors=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        page.goto("/orders")
        expect(page).to_have_url(re.compile(r"/login\?next=/orders$"))
        page.get_by_label("Operator token").fill(mint_token(auth, subject="5", ttl_s=600))
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_contain_text("lacks the paysaga:operator scope")
        operator = mint_token(auth, subject="ops-alice", operator=True, ttl_s=600)
        page.get_by_label("Operator token").fill(operator)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/orders$"))
        expect(page.locator(".who")).to_contain_text("ops-alice")
        live(page)
        order_id = new_order(stack, 5, "console-secured")
        expect(page.locator(f'tr[data-id="{order_id}"]')).to_be_visible()
        page.goto(f"/orders/{order_id}")
        expect(page.locator("h1 .badge")).to_have_text("COMPLETED")
        applied = page.locator("tr[data-step]").filter(has_text="applied")
        expect(applied).to_have_count(3)
        screenshot(page, "console-secured-order")
    finally:
        context.close()


@pytest.fixture(scope="module")
def replicated(
    tmp_path_factory: pytest.TempPathFactory,
    grpcurl_binary: str,
    postgres_server: PostgresRuntime,
) -> Iterator[tuple[GrpcurlStack, ConsoleProcess]]:
    """Two replicas of each service on PostgreSQL (`make up REPLICAS=2 DB=postgres`), and the
    console pointed at all four."""
    stack = Stack(
        tmp_path_factory.mktemp("replicated-console"),
        db="postgres",
        replicas=2,
        ports="free",
        postgres=postgres_server,
        databases=fresh_databases(postgres_server),
        detach=False,
    )
    with running(stack, grpcurl_binary) as started:
        [port] = free_ports(1)
        process = ConsoleProcess(
            CONSOLE,
            f"127.0.0.1:{port}",
            {"PAYSAGA_CONSOLE_STATUS_POLL_S": "1", "PAYSAGA_CONSOLE_CALL_TIMEOUT_S": "2"},
            run_dir=stack.run_dir,
            log_dir=stack.log_dir,
            order_addresses=stack.addresses("order"),
            payment_addresses=stack.addresses("payment"),
        )
        process.start()
        try:
            process.wait_serving()
            yield started, process
        finally:
            process.stop()


def test_with_two_replicas_each_every_replica_shows_and_the_flow_survives_one_going(
    browser: Browser, replicated: tuple[GrpcurlStack, ConsoleProcess]
) -> None:
    stack, process = replicated
    context = browser.new_context(base_url=process.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        page.goto("/replicas")
        cards = page.locator("li.replica")
        expect(cards).to_have_count(4)
        expect(page.locator("li.replica.state-unreachable")).to_have_count(0)
        screenshot(page, "console-replicas-2x2")
        flow = context.new_page()
        flow.goto("/")
        live(flow)
        # The console's WatchOrders is on order replica 0: stop it, the flow goes on.
        first, second_address = stack.stack.addresses("order")
        expect(flow.locator('[data-flow="watch-address"]')).to_have_text(first)
        stack.stack.process("order", 0).stop()
        second = stack.grpcurl("order", 1)
        body = {"user_id": 2, "product_id": 1, "request_id": f"console-2x2-{uuid.uuid4()}"}
        order_id = str(second.call(f"{ORDER}/CreateOrder", body)["order"]["id"])  # type: ignore[index]
        expect(flow.locator('[data-flow="completed"]')).not_to_have_text("0")
        expect(flow.locator('[data-flow="watch-address"]')).to_have_text(second_address)
        expect(page.locator("li.replica.state-unreachable")).to_have_count(1)
        page.goto(f"/orders/{order_id}")
        expect(page.locator("h1 .badge")).to_have_text("COMPLETED")
        expect(page.locator("tr[data-step]").filter(has_text="applied")).to_have_count(3)
    finally:
        context.close()
        stack.stack.restart("order", 0)
