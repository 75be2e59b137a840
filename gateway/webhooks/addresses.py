"""Which webhook URLs and addresses the gateway may call.

Production: https only, and never a loopback, link-local, private or otherwise non-public
address unless ``GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`` is set. Development allows http and
any address (``http://127.0.0.1`` receivers). The URL is checked when an endpoint is created
(a literal address or ``localhost``), and every address a host name resolves to is checked
again at each send (``sending``), which connects to the checked address only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.settings import Settings

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    https_only: bool
    allow_private: bool

    @classmethod
    def of(cls, settings: Settings) -> AddressPolicy:
        production = settings.gateway_env == "production"
        return cls(
            https_only=production,
            allow_private=not production or settings.gateway_webhook_allow_private_networks,
        )

    def allows(self, address: IPAddress) -> bool:
        if self.allow_private:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_global and not address.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_problem(url: str, policy: AddressPolicy) -> str | None:
    """Why an endpoint URL is refused, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"url must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a bad port raises here
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "url must be an http(s) URL with a host"
    if policy.https_only and parts.scheme != "https":
        return "url must use https"
    if parts.username is not None or parts.password is not None:
        return "url must not carry credentials"
    address = _literal(host)
    if address is None and (host == "localhost" or host.endswith(".localhost")):
        address = ipaddress.IPv4Address("127.0.0.1")
    if address is not None and not policy.allows(address):
        return "url must not point to a loopback, link-local or private address"
    return None
