"""OpenAPI links: where the id an answer carries can be used next (clients and Schemathesis' stateful runs follow
them)."""

from __future__ import annotations

from typing import Any


def _pointer(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def id_links(status: int, description: str, param: str, *operations: str) -> dict[int | str, dict[str, Any]]:
    """``status``'s answer links its ``id`` to ``param`` of each operation ("METHOD /path")."""
    links = {}
    for operation in operations:
        method, path = operation.split(" ", 1)
        name = "_".join([method.lower(), *(part for part in path.split("/")[2:] if not part.startswith("{"))])
        links[name] = {"operationRef": _pointer(method, path), "parameters": {param: "$response.body#/id"}}
    return {status: {"description": description, "links": links}}
