"""Where Refundflow may send a merchant's webhooks and alerts: public addresses only.

A URL is checked when it is saved (syntax and what its host resolves to) and again at every connection (the
notifier resolves, checks every address and connects to a checked one, so a DNS answer that changes between
the two cannot point a delivery at our own network). ``REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS=true`` lifts the
address rule for local runs and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger(__name__)
MAX_URL_LENGTH = 2048


class UrlNotAllowed(ValueError):
    """The URL is not one we may call: bad syntax, or a host that is (or resolves to) a non-public address."""

    code = "url_not_allowed"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# IPv6 addresses that carry an IPv4 address in their low 32 bits, which a translator on the path delivers to:
# NAT64's well-known prefix (RFC 6052) and SIIT's IPv4-translated addresses (RFC 7915).
_CARRY_IPV4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
# Global unicast: every IPv6 address allocated for the Internet is in it. Outside it, is_global still says True of
# some (NAT64 for local use 64:ff9b:1::/48, site-local fec0::/10, IPv4-compatible ::/96) on the Pythons we run.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64, SIIT), if it stands for one."""
    if any(address in network for network in _CARRY_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses; loopback, private, link-local, CGNAT, multicast, reserved,
    IPv6 outside global unicast (2000::/3), and IPv4 addresses hidden in IPv6 that are any of those, are not."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address not in _GLOBAL_UNICAST:
            return False
    return address.is_global and not address.is_multicast


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; raises UrlNotAllowed for anything else."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("the URL must be http(s)://host/...")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("the URL must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_public(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """Every address ``host`` resolves to, all of them checked; raises UrlNotAllowed if any is not public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        log.info("outbound_url_unresolved", host=host, error=str(exc))
        raise not_public(host) from exc
    return public_addresses(host, infos, allow_private=allow_private)


def not_public(host: str) -> UrlNotAllowed:
    """The one refusal of a host, whether it does not resolve or resolves to an address of ours: two answers would
    let a merchant tell which names exist inside our network (postgres, redis...) from names that exist nowhere."""
    return UrlNotAllowed(f"the host {host!r} does not resolve to a public address")


# One entry of getaddrinfo's answer: (family, type, proto, canonical name, (address, port, ...)).
AddressInfo = tuple[Any, ...]


def public_addresses(host: str, infos: Sequence[AddressInfo], *, allow_private: bool) -> list[IPAddress]:
    """The addresses of ``getaddrinfo``'s answer for ``host``, every one checked; raises UrlNotAllowed if any is not
    public (or there is none)."""
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        log.info("outbound_url_unresolved", host=host, error="no address")
        raise not_public(host)
    if not allow_private:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            # The address goes to our logs only: the merchant sees the refusal, and a name of ours (postgres,
            # localhost) must not tell them what our network looks like.
            log.info("outbound_url_refused", host=host, address=str(refused[0]))
            raise not_public(host)
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse, when it is saved, a URL we would never call."""
    host, port = parse_url(url)
    await resolve_public(host, port, allow_private=allow_private)
