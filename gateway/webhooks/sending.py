"""One webhook POST, sent only to an address the policy allows.

The host is resolved here, every address it resolves to is checked, and the request is sent
to the checked address itself (the URL's host replaced by it; the Host header and, for
https, the TLS server name and certificate check keep the original name). So the address
connected to is the address checked: a DNS answer that changes between check and connect
(rebinding) cannot send the request elsewhere. Redirects are not followed and no proxy
from the environment is used (``http_client``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

import httpx

from gateway.webhooks.addresses import AddressPolicy, IPAddress

USER_AGENT = "billing-gateway-webhooks/1"
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt gave: result is success, http_error, timeout, network_error or
    refused (the address policy said no: nothing was sent)."""

    result: str
    status_code: int | None
    latency_ms: float
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.result == "success"


class Refused(Exception):
    """The URL's host resolves to an address the policy does not allow."""


def http_client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


async def checked_address(url: httpx.URL, policy: AddressPolicy) -> IPAddress:
    port = url.port or (443 if url.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise Refused(f"{url.host} does not resolve")
    refused = [a for a in addresses if not policy.allows(a)]
    if refused:
        raise Refused(f"{url.host} resolves to a non-public address ({refused[0]})")
    return addresses[0]


async def post(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    body: str,
    policy: AddressPolicy,
    limit_seconds: float,
) -> Outcome:
    started = time.monotonic()

    def outcome(result: str, status: int | None = None, error: str | None = None) -> Outcome:
        elapsed = (time.monotonic() - started) * 1000
        return Outcome(result, status, round(elapsed, 3), error and error[:MAX_ERROR_LENGTH])

    try:
        async with asyncio.timeout(limit_seconds):  # the whole exchange, however slowly it trickles
            target = httpx.URL(url)
            address = await checked_address(target, policy)
            request = client.build_request(
                "POST",
                target.copy_with(host=str(address)),
                content=body.encode(),
                headers={**headers, "host": target.netloc.decode("ascii")},
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            response = await client.send(request, stream=True)
            await response.aclose()  # the answer's body is not needed
    except Refused as exc:
        return outcome("refused", error=str(exc))
    except (TimeoutError, httpx.TimeoutException):
        return outcome("timeout", error=f"no answer within {limit_seconds:g} s")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return outcome("network_error", error=f"{type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return outcome("success", response.status_code)
    return outcome("http_error", response.status_code, f"HTTP {response.status_code}")
