"""Calls to merchants' URLs (webhooks, Slack): public addresses only, one deadline, a capped answer.

Every connection resolves its host, checks every address (``refundflow_shared.outbound_urls``) and connects
to one of those checked addresses: there is no second lookup a changing DNS answer could slip through, and TLS
still verifies (and sends as SNI) the URL's own host name. A failed call reports only a coarse category, so
that the delivery log cannot be used to map our network.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from refundflow_shared.outbound_urls import UrlNotAllowed, resolve_public

# What a failed call records: never the socket error's text, which names hosts and ports.
TIMEOUT = "timeout"
CONNECTION_FAILED = "connection_failed"
TLS_ERROR = "tls_error"
URL_NOT_ALLOWED = UrlNotAllowed.code
RESPONSE_TOO_LARGE = "response_too_large"


def http_status_error(status_code: int) -> str:
    return f"http_{status_code}"


class CallFailed(Exception):
    """The call got no usable answer; ``category`` says why, coarsely."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.category = category


class _ResponseTooLarge(Exception):
    pass


class PublicAddressBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses ``resolve_public`` checked."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_public(host, port, allow_private=self._allow_private)
        failure: Exception | None = None
        for address in addresses:  # each one checked; the first that answers wins
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None, "resolve_public returns at least one address"
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowed("unix sockets are not a merchant's URL")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicAddressTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (pooling, keep-alive, TLS) on the public-address backend."""

    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicAddressBackend(allow_private=allow_private),
        )


def outbound_client(*, allow_private: bool, max_connections: int) -> httpx.AsyncClient:
    """One client for every outbound call, so connections to the same receiver are reused.

    Redirects are not followed: a call goes where the merchant said, and nowhere else."""
    # httpx logs every request's URL at INFO; a Slack webhook URL is a credential.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    transport = PublicAddressTransport(
        allow_private=allow_private, limits=httpx.Limits(max_connections=max_connections)
    )
    return httpx.AsyncClient(transport=transport, follow_redirects=False)


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    max_response_bytes: int,
) -> int:
    """POST ``body``; the answer's status once its body (at most ``max_response_bytes``) has been read.

    Everything (resolving, connecting, TLS, sending, reading) happens within ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            async with client.stream("POST", url, content=body, headers=headers, timeout=deadline) as response:
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > max_response_bytes:
                        raise _ResponseTooLarge
                return response.status_code
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise CallFailed(TIMEOUT) from exc
    except (UrlNotAllowed, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise CallFailed(URL_NOT_ALLOWED) from exc
    except _ResponseTooLarge as exc:
        raise CallFailed(RESPONSE_TOO_LARGE) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise CallFailed(TLS_ERROR if _caused_by_tls(exc) else CONNECTION_FAILED) from exc


def _caused_by_tls(exc: BaseException | None) -> bool:
    for _ in range(10):  # httpx wraps httpcore's error, which wraps the ssl one
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
