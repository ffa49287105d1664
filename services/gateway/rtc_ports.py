"""The gateway's WebRTC media ports within a configured UDP range (a container or a Kubernetes pod
publishes a fixed range; docs/deploy.md).

aioice binds each host candidate to a port the OS picks and has no option for a range (aiortc/aioice
issue 47, pull request 112 still open), so its ICE connection is subclassed here: with a range set, host
candidates are bound to the first free port of the range, and server-reflexive and relayed candidates
are then gathered from those sockets exactly as aioice does. Without a range nothing changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import aiortc.rtcicetransport
from aioice import Candidate, Connection, TransportPolicy
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, relayed_candidate, server_reflexive_candidate

_PORTS: ContextVar[range | None] = ContextVar("voxmesh_rtc_ports", default=None)
_RCVBUF = 1 << 20


class PortRangeError(OSError):
    """No port of the configured range is free on an address."""


@contextmanager
def port_range(ports: range | None) -> Iterator[None]:
    """Peer connections that gather candidates inside this block bind within `ports` (None: any)."""
    install()
    token = _PORTS.set(ports)
    try:
        yield
    finally:
        _PORTS.reset(token)


def install() -> None:
    """Make aiortc build its ICE connections from `RangedConnection` (idempotent)."""
    aiortc.rtcicetransport.Connection = RangedConnection  # type: ignore[attr-defined]


class RangedConnection(Connection):
    """aioice's ICE connection, binding host candidates within the range of the current context."""

    async def get_component_candidates(
        self,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's signature)
    ) -> list[Candidate]:
        """As aioice's, with host sockets bound within the configured range."""
        ports = _PORTS.get()
        if ports is None:
            return await super().get_component_candidates(component, addresses, timeout)
        hosts: list[StunProtocol] = []
        for address in addresses:
            try:
                hosts.append(await self._bind_in_range(component, address, ports))
            except OSError:
                continue  # like aioice: an address that cannot be bound yields no candidate
        self._protocols += hosts
        candidates = [protocol.local_candidate for protocol in hosts]
        return candidates + await self._reflexive_and_relayed(component, hosts, timeout)

    async def _bind_in_range(self, component: int, address: str, ports: range) -> StunProtocol:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        loop = asyncio.get_running_loop()
        for port in ports:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((address, port))
            except OSError:
                sock.close()
                continue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sock.setblocking(False)
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(self), sock=sock)
            host, bound = sock.getsockname()[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component,
                transport="udp", priority=candidate_priority(component, "host"), host=host, port=bound,
                type="host",
            )  # fmt: skip
            return protocol
        raise PortRangeError(f"no free UDP port in {ports.start}-{ports.stop - 1} on {address}")

    async def _reflexive_and_relayed(
        self, component: int, hosts: list[StunProtocol], within_s: float
    ) -> list[Candidate]:
        tasks: list[asyncio.Task[tuple[Candidate, StunProtocol | None]]] = []
        if self.stun_server:
            for protocol in hosts:
                if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                    tasks.append(asyncio.create_task(server_reflexive_candidate(protocol, self.stun_server)))
        if self.turn_server:
            relay = relayed_candidate(
                component=component,
                hide_related_address=self._transport_policy == TransportPolicy.RELAY,
                protocol_factory=lambda: StunProtocol(self), turn_server=self.turn_server,
                turn_username=self.turn_username, turn_password=self.turn_password,
                turn_ssl=self.turn_ssl, turn_transport=self.turn_transport,
            )  # fmt: skip
            tasks.append(asyncio.create_task(relay))
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=within_s)
        for task in pending:
            task.cancel()
        found: list[Candidate] = []
        for task in done:
            if task.exception() is None:
                candidate, relay_protocol = task.result()
                found.append(candidate)
                if relay_protocol is not None:
                    self._protocols.append(relay_protocol)
        return found
