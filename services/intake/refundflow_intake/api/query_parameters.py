"""Query strings are read strictly: a name the route does not take, or a one-value parameter given twice, is refused
(422 invalid_request naming it), rather than ignored: ``?payment=`` for ``payment_id`` listed every refund. The
public reads storefront pages make are the exception: there a name the route does not take is ignored, as widgets
add a cache-buster (``?_=1700000000``)."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from fastapi import Request, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


async def declared_query_only(request: Request) -> None:
    """A dependency for every API router (``app.include_router``)."""
    _check_query(request, ignore_unknown=False)


async def unknown_query_ignored(request: Request) -> None:
    """The public reads' dependency instead: a name the route does not take is ignored; a one-value parameter it
    takes, given twice, is still refused."""
    _check_query(request, ignore_unknown=True)


def _check_query(request: Request, *, ignore_unknown: bool) -> None:
    route: APIRoute = request.scope["route"]
    if (declared_and_many := _QUERY_PARAMETERS.get(route.unique_id)) is None:
        declared_and_many = _QUERY_PARAMETERS[route.unique_id] = _query_parameters(route)
    declared, many = declared_and_many
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name not in declared:
            if ignore_unknown:
                continue
            _refuse(name, value, "extra_forbidden", "not a parameter of this endpoint")
        if name in seen and name not in many:
            _refuse(name, value, "repeated_parameter", "given more than once: it takes one value")
        seen.add(name)


# By route (its unique id: its name, path and method), read once: a route's parameters do not change.
_QUERY_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _query_parameters(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The route's query parameters by the name clients send, and those of them that take several values."""
    query = [field for field in get_flat_params(route.dependant) if isinstance(field.field_info, params.Query)]
    many = frozenset(field.alias for field in query if _takes_many(field.field_info.annotation))
    return frozenset(field.alias for field in query), many


def _takes_many(annotation: Any) -> bool:
    return any(get_origin(kind) in (list, set, frozenset, tuple) for kind in (annotation, *get_args(annotation)))


def _refuse(name: str, value: str, kind: str, said: str) -> None:
    raise RequestValidationError([{"type": kind, "loc": ("query", name), "msg": said, "input": value}])
