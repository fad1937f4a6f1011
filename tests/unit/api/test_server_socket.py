"""The API's listening socket: its connections send small writes at once (TCP_NODELAY).

Without it every response on a kept-alive connection waited ~40 ms for the client's delayed
ACK (the headers and the body are two writes), which a browser loading a page pays per call."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kubeline import server


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_accepted_connections_have_nagle_off(host: str) -> None:
    try:
        sock = server.bind(host, 0)
    except OSError as error:  # a host without IPv6
        pytest.skip(f"cannot listen on {host}: {error}")
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted: socket.socket = writer.get_extra_info("socket")
        seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listener = await asyncio.start_server(handle, sock=sock)
    try:
        _, writer = await asyncio.open_connection(host, sock.getsockname()[1])
        try:
            nodelay = await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            await writer.wait_closed()
        assert nodelay != 0
    finally:
        listener.close()
        await listener.wait_closed()
