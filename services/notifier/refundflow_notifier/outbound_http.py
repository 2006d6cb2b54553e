"""Calls to merchants' URLs (webhooks, Slack): public addresses only, one deadline, a capped answer.

Every connection resolves its host, checks every address (``refundflow_shared.outbound_urls``) and connects
to one of those checked addresses: there is no second lookup a changing DNS answer could slip through, and TLS
still verifies (and sends as SNI) the URL's own host name. A failed call reports only a coarse category, so
that the delivery log cannot be used to map our network.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from refundflow_shared.outbound_urls import (
    AddressInfo,
    UrlNotAllowed,
    is_public_address,
    not_public,
    public_addresses,
)

# What a failed call records: never the socket error's text, which names hosts and ports.
TIMEOUT = "timeout"
CONNECTION_FAILED = "connection_failed"
TLS_ERROR = "tls_error"
URL_NOT_ALLOWED = UrlNotAllowed.code
# What a 2xx records beside its status when its answer was not read to the end (over the cap, late, cut off).
RESPONSE_TRUNCATED = "response_truncated"


def http_status_error(status_code: int) -> str:
    return f"http_{status_code}"


class CallFailed(Exception):
    """The call got no usable answer; ``category`` says why, coarsely."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.category = category


Lookup = Callable[..., Sequence[AddressInfo]]


class PublicAddressResolver(AbstractResolver):
    """aiohttp's resolver, answering only addresses ``public_addresses`` checked.

    aiohttp connects to exactly these addresses, while TLS verifies and sends as SNI the URL's host. Lookups run on
    threads of their own, one per host at a time, shared by every call to it: a lookup cannot be stopped once
    started, so a host whose name server never answers would otherwise hold a thread per call (the deadline ends
    the call, not the lookup) until every thread was held and every other merchant's calls, and the SMTP
    server's lookup, waited behind it."""

    def __init__(self, *, allow_private: bool, threads: int, lookup: Lookup = socket.getaddrinfo) -> None:
        self._allow_private = allow_private
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outbound-lookup")
        self._lookup = lookup
        self._in_flight: dict[tuple[str, int], asyncio.Future[Sequence[AddressInfo]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            # Shielded: one caller's deadline must not cancel the lookup the others wait for too.
            infos = await asyncio.shield(self._lookup_of(host, port))
        except (socket.gaierror, UnicodeError) as exc:
            raise not_public(host) from exc
        addresses = public_addresses(host, infos, allow_private=self._allow_private)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in addresses
        ]

    def _lookup_of(self, host: str, port: int) -> asyncio.Future[Sequence[AddressInfo]]:
        """The lookup of ``host`` in flight, or a new one."""
        key = (host, port)
        if (lookup := self._in_flight.get(key)) is None:
            call = functools.partial(self._lookup, host, port, type=socket.SOCK_STREAM)
            lookup = asyncio.get_running_loop().run_in_executor(self._threads, call)
            self._in_flight[key] = lookup
            lookup.add_done_callback(functools.partial(self._done, key))
        return lookup

    def _done(self, key: tuple[str, int], lookup: asyncio.Future[Sequence[AddressInfo]]) -> None:
        self._in_flight.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # read here too: every caller may have given up on it

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)  # a lookup that never returns must not hold us


def _literal_addresses_checked(*, allow_private: bool) -> aiohttp.ClientMiddlewareType:
    """aiohttp connects to an IP-literal host without asking the resolver: check those here."""

    async def check(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        try:
            address = ipaddress.ip_address(request.url.raw_host or "")
        except ValueError:
            return await handler(request)  # a name: the resolver checks it at every connection
        if not allow_private and not is_public_address(address):
            raise UrlNotAllowed("the URL's host is a non-public address")
        return await handler(request)

    return check


def outbound_client(*, allow_private: bool, max_connections: int) -> aiohttp.ClientSession:
    """One client for every outbound call, so connections to the same receiver are reused.

    Create it inside the running loop. Redirects are not followed (see ``post``); no cookies are kept, so
    nothing one receiver sets reaches another call; proxies from the environment are not used."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        # A lookup thread for each connection there may be: no call's lookup waits for a thread.
        resolver=PublicAddressResolver(allow_private=allow_private, threads=max_connections),
        use_dns_cache=False,  # every new connection resolves and checks again
    )
    return aiohttp.ClientSession(
        connector=connector,
        middlewares=(_literal_addresses_checked(allow_private=allow_private),),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # the answer is only counted, never read: the cap is on the bytes received
        skip_auto_headers=("Accept-Encoding",),
    )


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: its status, and whether its body was read to the end (it was not when it was over the
    cap, still coming at the deadline, or cut off: what follows the status does not change it)."""

    status: int
    complete: bool


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    max_response_bytes: int,
) -> Answer:
    """POST ``body``; the answer once its status has come and its body has been read (at most
    ``max_response_bytes`` of it, within the deadline). No status is a ``CallFailed``.

    Everything (resolving, connecting, TLS, sending, reading) happens within ``deadline`` seconds, and a call
    goes where the merchant said and nowhere else: redirects are answers, not followed."""
    ends = asyncio.get_running_loop().time() + deadline
    try:
        async with asyncio.timeout_at(ends):
            response = await client.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=deadline),
            )
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise CallFailed(TIMEOUT) from exc
    except (UrlNotAllowed, aiohttp.ClientError, OSError) as exc:
        raise CallFailed(_category(exc)) from exc
    complete = False
    try:
        async with asyncio.timeout_at(ends):
            complete = await _read_capped(response, max_response_bytes)
    except (TimeoutError, aiohttp.ClientError, OSError):
        complete = False  # the status came: a body dripping past the deadline, or cut off, does not undo it
    finally:
        if complete:
            response.release()  # read to the end: the connection can serve the next call
        else:
            response.close()  # drop the connection rather than drain the rest of an endless answer
    return Answer(response.status, complete)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bool:
    """Read and drop the body; False as soon as it is over ``max_bytes``, never holding more than a chunk."""
    received = 0
    async for chunk in response.content.iter_any():
        received += len(chunk)
        if received > max_bytes:
            return False
    return True


def _category(exc: BaseException | None) -> str:
    """aiohttp wraps what it met (the resolver's refusal, the ssl error) in its own connection errors."""
    for _ in range(10):
        if exc is None:
            break
        if isinstance(exc, UrlNotAllowed | aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            return URL_NOT_ALLOWED
        if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
            return TLS_ERROR
        exc = exc.__cause__ or exc.__context__
    return CONNECTION_FAILED
