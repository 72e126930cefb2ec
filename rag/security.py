"""Which requests a local server answers, and which client address a request is counted as.

Shared by the chat page (app.py's ``PageGuard``); plain functions of header values, so any
server can apply the same rules.

Invariants:
- A request is foreign unless its ``Host``, and its ``Origin`` when it sends one, name this
  server: a loopback name or address, an address the server was bound to or reached at, or
  a name listed in ``RAG_ALLOWED_HOSTS``. A web page that points its own domain at
  127.0.0.1 (DNS rebinding) sends its domain as ``Host``; a cross-site page sends its own
  ``Origin``; a sandboxed frame or a local file sends ``Origin: null``: all three are
  foreign. A missing ``Origin`` is not (browsers send one on every cross-site request).
- A client's address comes from ``X-Forwarded-For`` only when the request reached the
  server from one of ``RAG_TRUSTED_PROXIES`` (none by default): the client is then the
  right-most address in that header that is not a trusted proxy. Any other request that
  carries the header is counted as one client, ``FORWARDED_CLIENT``: neither the header,
  which the client wrote, nor the peer address, which the server (uvicorn, below Streamlit)
  may already have replaced with the header's value, can be believed. So a new header value
  per guess is not a new client, and no header value is anyone else's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_NAMES = frozenset({"localhost"})
# The client key of a request whose forwarding header is not believed (see the invariants).
FORWARDED_CLIENT = "forwarded"


def split_list(value: str) -> list[str]:
    """A comma-separated setting (``RAG_ALLOWED_HOSTS``, ``RAG_TRUSTED_PROXIES``) as items."""
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def host_name(value: str) -> str:
    """The host of a ``Host`` header (``name:port``, ``[::1]:8501``): lower case, no dot at
    the end, and ``""`` when it does not parse."""
    try:
        host = urlsplit("//" + value.strip()).hostname or ""
    except ValueError:  # an unclosed IPv6 bracket
        return ""
    return host.rstrip(".")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(address: str) -> bool:
    """Whether a bind address means every interface (``0.0.0.0``, ``::``, or unset)."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def allowed_host(host: str, allowed: Collection[str]) -> bool:
    return bool(host) and (is_loopback(host) or host in allowed)


def foreign_request(host_header: str, origin: str | None, allowed: Collection[str]) -> bool:
    """Whether a request's ``Host`` or ``Origin`` names another site (see the invariants).

    ``allowed``: lower-case names and addresses besides loopback, e.g. the bind address and
    ``split_list(settings.allowed_hosts)``.
    """
    if not allowed_host(host_name(host_header), allowed):
        return True
    if origin is None:
        return False
    try:
        origin_host = (urlsplit(origin.strip()).hostname or "").rstrip(".")
    except ValueError:
        return True
    return not allowed_host(origin_host, allowed)  # "null" has no host: foreign


def networks(spec: Iterable[str]) -> list[Network]:
    """Addresses and networks (``10.0.0.5``, ``10.0.0.0/8``) of a setting; ``*`` is every
    address. Raises ValueError on an item that is neither."""
    found: list[Network] = []
    for item in spec:
        if item == "*":
            found += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is neither an address nor a network.") from None
    return found


def trusted(address: str, among: Collection[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in among)


def rightmost_untrusted(forwarded_for: str, among: Collection[Network]) -> str | None:
    """The right-most address of an ``X-Forwarded-For`` chain that is not in ``among``: the
    last hop that no trusted proxy vouches for. None when every hop is trusted."""
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not trusted(hop, among):
            return hop
    return None


def client_key(
    reported: str,
    forwarded_for: str | None,
    proxies: Collection[Network],
    server_trusts: Collection[Network],
) -> str:
    """The address a request's failed sign-ins are counted by (see the invariants).

    ``reported``: the peer address as the server passes it on; ``server_trusts``: the
    addresses the server itself takes ``X-Forwarded-For`` from (uvicorn's
    ``FORWARDED_ALLOW_IPS``), which it has already replaced ``reported`` with the header's
    right-most untrusted hop for. ``proxies``: ``RAG_TRUSTED_PROXIES``.
    """
    if forwarded_for is None:
        return reported
    if reported == rightmost_untrusted(forwarded_for, server_trusts):
        # Maybe replaced by the server: the peer was then one of server_trusts.
        peer_is_proxy = covers(proxies, server_trusts)
    else:
        peer_is_proxy = trusted(reported, proxies)
    hop = rightmost_untrusted(forwarded_for, proxies) if peer_is_proxy else None
    try:
        return str(ipaddress.ip_address(hop or ""))
    except ValueError:  # no untrusted hop, or not an address
        return FORWARDED_CLIENT


def covers(outer: Collection[Network], inner: Collection[Network]) -> bool:
    """Whether every network of ``inner`` lies within one of ``outer``."""
    return all(
        any(net.version == big.version and net.subnet_of(big) for big in outer)  # type: ignore[arg-type]
        for net in inner
    )
