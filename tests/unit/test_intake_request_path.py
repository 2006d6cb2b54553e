"""Every route and dependency of intake is a coroutine: FastAPI runs a plain function in a worker thread, a hop
that costs more than the function itself on every request (issue 9)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from refundflow_intake.app import create_app
from refundflow_intake.settings import IntakeSettings


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI wraps an included router
        if included is not None:
            yield from _routes(included.routes)


def _is_coroutine(call: Any) -> bool:
    method = call.__call__ if not inspect.isfunction(call) else None  # an instance whose __call__ is the dependency
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)


def _plain_functions(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        if sub.call is not None and not _is_coroutine(sub.call):
            yield f"{sub.call.__module__}.{sub.call.__qualname__}"
        yield from _plain_functions(sub)


def test_no_route_or_dependency_of_intake_runs_in_a_worker_thread() -> None:
    app = create_app(IntakeSettings(refundflow_admin_token="t" * 32))
    routes = list(_routes(app.routes))
    plain = {f"route {r.path}" for r in routes if not _is_coroutine(r.endpoint)}
    plain |= {name for route in routes for name in _plain_functions(route.dependant)}

    assert len(routes) > 50  # the walk reached the included routers
    assert plain == set()
