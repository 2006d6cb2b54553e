"""The security headers of the pages, as plain ASGI middleware: each family of pages (dashboard, portal, hosted
policy) names the headers its responses carry. Starlette's ``@app.middleware("http")`` would cost every request,
API calls included, a task group and two memory streams."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class PageHeaderRule:
    defaults: Mapping[str, str]  # set unless the page set its own
    overrides: Mapping[str, str] = field(default_factory=dict)  # always set


RuleForPath = Callable[[str], PageHeaderRule | None]


class PageHeaders:
    def __init__(self, app: ASGIApp, rule_for: RuleForPath) -> None:
        self.app = app
        self.rule_for = rule_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self.rule_for(scope["path"]) if scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in rule.defaults.items():
                    headers.setdefault(name, value)
                for name, value in rule.overrides.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
