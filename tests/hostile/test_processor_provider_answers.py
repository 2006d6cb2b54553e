"""The Stripe adapter reads the provider's answers as hostile: an answer cut short, or one that never ends, is no
answer (``ProviderUnavailable``: the refund is reconciled, never failed), whatever the HTTP client raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from refundflow_processor.payment_provider import ProviderUnavailable
from refundflow_processor.stripe_provider import StripeProvider

pytestmark = pytest.mark.asyncio(loop_scope="session")

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def provider_answering(answer: Answer) -> AsyncIterator[str]:
    """A real HTTP server on a free port that reads each request's head and body, then answers with ``answer``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        await reader.readexactly(length)
        await answer(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def cut_short(writer: asyncio.StreamWriter) -> None:
    """Promises 400 bytes of JSON, sends 20, hangs up."""
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"id": "re_1", "amo')
    await writer.drain()
    writer.close()


async def never_ends(writer: asyncio.StreamWriter) -> None:
    """Sends the head and then nothing more, holding the connection."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{")
    await writer.drain()
    await asyncio.sleep(30)


@pytest.mark.parametrize("answer", [cut_short, never_ends], ids=["cut_short", "never_ends"])
async def test_an_answer_that_does_not_arrive_whole_is_no_answer(answer: Answer) -> None:
    async with provider_answering(answer) as url:
        provider = StripeProvider("sk_test_hostile", url, timeout_seconds=1.0)
        try:
            with pytest.raises(ProviderUnavailable):
                await provider.create_refund(
                    payment_ref="pi_1", amount=100, currency="EUR", idempotency_key="key_1", refund_id="ref_1"
                )
        finally:
            await provider.close()
