"""Hosts a spec may connect to, resolved once and pinned, with a bound on name resolution.

``BATON_ALLOWED_HOSTS`` lists host names (``db.example.com``, ``*.example.com``)
and networks (``10.1.0.0/16``, ``192.0.2.7``). A name in the list is trusted
with whatever it resolves to; any other host must resolve into a listed
network. Unset, any host is allowed (loopback included). The connection then
goes to the address that was checked (libpq's ``hostaddr``, PyMySQL's host),
so a name that resolves differently a moment later (DNS rebinding) cannot
move it.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass

from etl_tasks.errors import BoundaryError, EndpointUnavailable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Name resolution cannot be interrupted, so it runs here and callers stop waiting at
# their deadline; a lookup that hangs holds one of these threads, never a request thread.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="baton-dns")


def resolve(host: str, port: int, timeout_s: float) -> list[str]:
    """The addresses of ``host`` (in the resolver's order); bounded by ``timeout_s``."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(0.05, timeout_s))
    except concurrent.futures.TimeoutError:
        raise EndpointUnavailable("timeout", f"resolving {host} timed out", timeout_s) from None
    except OSError as exc:
        raise EndpointUnavailable("connect", f"cannot resolve {host}: {exc}") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True)
class HostPolicy:
    """Allowed hosts; ``names is None`` means any host."""

    names: tuple[str, ...] | None
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> HostPolicy:
        if text is None or not text.strip():
            return cls(None)
        names: list[str] = []
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.append(item.lower().rstrip("."))
        return cls(tuple(names), tuple(networks))

    def _name_allowed(self, host: str) -> bool:
        assert self.names is not None
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.names)

    def _address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self.networks)

    def pick(self, host: str, port: int, timeout_s: float) -> str:
        """The checked address to connect to; raises :class:`BoundaryError` if none is allowed."""
        addresses = resolve(host, port, timeout_s)
        if self.names is None or self._name_allowed(host):
            return addresses[0]
        for address in addresses:
            if self._address_allowed(address):
                return address
        raise BoundaryError(f"host {host} is not allowed (BATON_ALLOWED_HOSTS)", "url")


def is_local_address(address: str) -> bool:
    """Whether ``address`` is this machine's (loopback, or an interface's own)."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
