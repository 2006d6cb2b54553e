"""A provider call about a subscription, and its answer sorted for the leased work that made it: done, a definite
refusal (the team is alerted), no definite answer (retried with backoff), or refused credentials (calls pause)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from refundflow_processor.payment_provider import ProviderAuthFailed, ProviderRefused, ProviderUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


@dataclass(frozen=True)
class Refused:
    message: str


@dataclass(frozen=True)
class Retry:
    error: str


@dataclass(frozen=True)
class AuthFailed:
    error: str


async def ask(call: Awaitable[T], deadline_seconds: float) -> Done[T] | Refused | Retry | AuthFailed:
    """The call's answer within ``deadline_seconds``; never raises for what the provider says or does not say."""
    try:
        async with asyncio.timeout(deadline_seconds):
            return Done(await call)
    except TimeoutError:
        return Retry(f"no answer within {deadline_seconds} s")
    except ProviderAuthFailed as exc:
        return AuthFailed(str(exc))
    except ProviderRefused as exc:
        return Refused(str(exc))
    except ProviderUnavailable as exc:
        return Retry(str(exc))
