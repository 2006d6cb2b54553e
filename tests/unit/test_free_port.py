"""The ports test stacks give their processes: nothing else on the machine may take one before the process binds it.

``bind(("127.0.0.1", 0))`` hands out a port of the kernel's ephemeral range, the range every outgoing connection
(a test's HTTP client, a pool's connection to PostgreSQL) takes its local port from. Between the check and the child's
own bind such a connection can take it, and the child dies with "address already in use".
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.infrastructure import free_port, port_slice

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not EPHEMERAL_RANGE.exists(), reason="the kernel's ephemeral range is read from Linux's /proc")
def test_a_free_port_is_below_the_range_outgoing_connections_take_their_ports_from() -> None:
    first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])

    ports = [free_port() for _ in range(50)]

    assert all(1024 <= port < first_ephemeral for port in ports), ports


def test_no_port_is_handed_out_twice_and_each_can_be_bound() -> None:
    ports = [free_port() for _ in range(200)]

    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_parallel_workers_take_ports_from_slices_that_do_not_overlap() -> None:
    slices = [port_slice(worker, workers=4, below=32768) for worker in range(4)]

    assert all(len(s) > 1000 for s in slices)
    for i, one in enumerate(slices):
        for other in slices[i + 1 :]:
            assert not set(one) & set(other)
    assert max(slices[-1]) < 32768
