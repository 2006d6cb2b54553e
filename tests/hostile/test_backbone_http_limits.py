"""Request bodies over the cap are refused with 413 before they are read whole and before authentication
(review finding 7); uvicorn runs with limits (25.11).

Intake runs as its own process (its console script, as in production) so that its memory can be watched.
"""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.app import create_app as create_notifier
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor.app import create_app as create_processor
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.http_protocol import BoundedHttpToolsProtocol
from refundflow_shared.http_service import server_config
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, service_env

CAP = 1024 * 1024
JUST_OVER = 1_100_000


@pytest.fixture(scope="module")
async def intake_process(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    port = free_port()
    env = service_env(
        DATABASE_URL=await create_database(postgres_url),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        REFUNDFLOW_ADMIN_TOKEN="limits-admin-token",
        HTTP_PORT=str(port),
    )
    process = ServiceProcess(
        "intake", ["refundflow-intake"], env, Path(tmp_path_factory.mktemp("limits")), f"http://127.0.0.1:{port}/readyz"
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def port_of(process: ServiceProcess) -> int:
    return int(process.health_url.split(":")[2].split("/")[0])


def peak_memory_bytes(process: ServiceProcess) -> int:
    """The process's resident memory high-water mark (VmHWM): it shows any moment a body was held whole."""
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def request_head(port: int, *headers: str) -> bytes:
    lines = ["POST /v1/payments HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_an_unauthenticated_body_declared_over_the_cap_is_refused_before_it_is_sent(
    intake_process: ServiceProcess,
) -> None:
    port = port_of(intake_process)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request_head(port, f"Content-Length: {JUST_OVER}"))  # and not one byte of the body
        status, body = read_response(conn)

    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_streamed_body_over_the_cap_is_cut_off_and_never_held_whole(intake_process: ServiceProcess) -> None:
    port = port_of(intake_process)
    chunk = b"x" * (64 * 1024)
    peak_before = peak_memory_bytes(intake_process)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request_head(port, "Transfer-Encoding: chunked"))
        # A 48 MiB body, chunk by chunk, until the server answers (it must, long before). Each chunk is given
        # a moment to be read: a server that closes with unread input resets the connection, and the answer
        # may be lost with it (TCP, not the server's doing).
        while sent < 48 * 1024 * 1024 and not select.select([conn], [], [], 0.01)[0]:
            conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        status, body = read_response(conn)
    peak_after = peak_memory_bytes(intake_process)

    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert CAP < sent < 8 * CAP, "answered once the cap was passed, not at the end of the body"
    assert peak_after - peak_before < 8 * 1024 * 1024, "the body was never held whole"


def test_a_request_head_that_grows_past_the_header_limit_is_refused(intake_process: ServiceProcess) -> None:
    port = port_of(intake_process)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request_head(port).removesuffix(b"\r\n"))  # the head goes on...
        sent = 0
        while sent < 20 and not select.select([conn], [], [], 0.05)[0]:
            conn.sendall(b"X-Padding: " + b"p" * 4000 + b"\r\n")  # ...and on, past 16 KiB, never ending
            sent += 1
        status, _ = read_response(conn)
    assert status == 400


def test_a_head_within_the_limit_is_served_however_it_is_split_and_the_next_one_is_bounded_again(
    intake_process: ServiceProcess,
) -> None:
    port = port_of(intake_process)
    # 12 KiB of headers (under the 16 KiB limit), sent in 1 KiB pieces, then a second request on the same
    # connection: the count starts again with each request.
    padding = [f"X-Padding-{i}: " + "p" * 1000 for i in range(12)]
    head = request_head(port, "Content-Length: 2", *padding) + b"{}"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for request in range(2):
            for start in range(0, len(head), 1024):
                conn.sendall(head[start : start + 1024])
                time.sleep(0.01)  # separate reads on the server's side
            status, body = read_response(conn)
            assert (request, status) == (request, 401), body  # through the parser, to authentication
        # A body bigger than the limit, and in the same read the first lines of a head that then goes on and on:
        # the body does not count against that head, the rest does.
        body = b'"' + b"x" * 20_000 + b'"'
        big = request_head(port, f"Content-Length: {len(body)}") + body
        conn.sendall(big + b"\r\n".join(request_head(port).split(b"\r\n")[:2]) + b"\r\n")
        assert read_response(conn)[0] == 401
        for _ in range(20):
            if select.select([conn], [], [], 0.05)[0]:
                break
            conn.sendall(b"X-Padding: " + b"p" * 4000 + b"\r\n")
        status, _ = read_response(conn)
    assert status == 400


def test_a_control_character_in_a_header_is_refused_by_the_parser(intake_process: ServiceProcess) -> None:
    # RFC 9110 allows visible characters, spaces, tabs and obs-text in a field value; DEL or NUL make the request
    # invalid, and it is answered 400 before anything of the app runs (no authentication asked for).
    port = port_of(intake_process)
    for junk in ("\x7f", "\x00"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(request_head(port, "Content-Length: 2", f"X-Junk: a{junk}b") + b"{}")
            status, body = read_response(conn)
        assert (junk, status, body) == (junk, 400, b"Invalid HTTP request received.")


def test_a_body_within_the_cap_goes_on_to_authentication(intake_process: ServiceProcess) -> None:
    url = intake_process.health_url.replace("/readyz", "/v1/payments")
    response = httpx.post(url, content=b'{"a": "' + b"x" * (CAP - 100) + b'"}', timeout=30)
    assert response.status_code == 401


def apps() -> dict[str, FastAPI]:
    return {
        "intake": create_intake(IntakeSettings(refundflow_admin_token="t")),
        "processor": create_processor(
            ProcessorSettings(
                stripe_api_key="sk_test_limits", stripe_api_base="http://127.0.0.1:9", stripe_sandbox=True
            )
        ),
        "notifier": create_notifier(NotifierSettings()),
    }


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("intake", "/v1/payments"),
        ("processor", "/v1/provider-webhooks/stripe"),
        ("notifier", "/internal/v1/merchants/m/webhook-endpoints/e/replays"),
    ],
)
async def test_every_service_refuses_an_oversized_body_before_anything_else(service: str, path: str) -> None:
    app = apps()[service]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        response = await client.post(path, content=b"x" * JUST_OVER)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_uvicorn_runs_with_the_limits_from_settings() -> None:
    settings = ServiceSettings(http_keep_alive_seconds=7, http_max_concurrency=123, http_max_header_bytes=9000)
    config = server_config(FastAPI(), settings)
    assert config.timeout_keep_alive == 7
    assert config.limit_concurrency == 123
    assert config.h11_max_incomplete_event_size == 9000  # the bound on a request's head, h11's or ours
    assert config.http is BoundedHttpToolsProtocol
    assert config.forwarded_allow_ips == "127.0.0.1,::1"  # uvicorn's own default, FORWARDED_ALLOW_IPS, is not read


def test_trusted_proxies_are_addresses_or_networks_passed_to_uvicorn() -> None:
    settings = ServiceSettings(trusted_proxies=" 10.0.0.0/8, 2001:db8::1 ")
    assert server_config(FastAPI(), settings).forwarded_allow_ips == "10.0.0.0/8,2001:db8::1"
    with pytest.raises(ValueError, match="CIDR"):
        ServiceSettings(trusted_proxies="10.0.0.0/8,proxy.internal")
