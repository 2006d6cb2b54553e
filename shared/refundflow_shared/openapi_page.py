"""The OpenAPI document as a page people read (``/docs``): plain server-rendered HTML, no script and no asset from
elsewhere, like the AsyncAPI page. FastAPI's own pages load Swagger UI and ReDoc from CDNs: blank on a machine
with no internet, and every reader's browser would call on third parties.

Endpoints by tag, each with its parameters, body and answers (every error code the endpoint may give), the webhooks
the service sends (their bodies), then every type the endpoints take or give, linked from where it is used.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from refundflow_shared.reference_html import STYLE_ELEMENT, fields_table, prose, type_of

METHODS = ("get", "post", "put", "patch", "delete")


def render_page(document: dict[str, Any]) -> str:
    info = document["info"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append((method, path, operation))
    schemas = document.get("components", {}).get("schemas", {})
    webhooks = document.get("webhooks", {})
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{escape(info["title"])}: API reference</title>{STYLE_ELEMENT}</head>',
        "<body>",
        "<header>",
        f"<h1>{escape(info['title'])}: API reference</h1>",
        *([f"<p>{prose(info['description'])}</p>"] if info.get("description") else []),
        f"<p>OpenAPI {escape(document['openapi'])}, version {escape(info['version'])}: "
        '<a href="openapi.json">the document as JSON</a>.</p>',
        '<nav aria-label="Sections"><ul>',
        *(f'<li><a href="#tag-{_slug(tag)}">{escape(tag)}</a></li>' for tag in by_tag),
        *(['<li><a href="#webhooks">Webhooks</a></li>'] if webhooks else []),
        '<li><a href="#types">Types</a></li>',
        "</ul></nav>",
        "</header>",
        "<main>",
        *(_tag_section(tag, operations) for tag, operations in by_tag.items()),
        *([_webhooks_section(webhooks)] if webhooks else []),
        '<section aria-labelledby="types"><h2 id="types">Types</h2>',
        *(fields_table(name, schema, f"type-{name}") for name, schema in schemas.items()),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts)


def _webhooks_section(webhooks: dict[str, Any]) -> str:
    """What the service sends to its users' endpoints (OpenAPI 3.1 ``webhooks``), one article per event type."""
    parts = [
        '<section aria-labelledby="webhooks"><h2 id="webhooks">Webhooks</h2>',
        "<p>What Refundflow sends to your endpoints: each event type's body.</p>",
    ]
    parts += [
        _operation(method, name, item[method], anchor=f"webhook-{name}")
        for name, item in webhooks.items()
        for method in METHODS
        if method in item
    ]
    parts.append("</section>")
    return "\n".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def _tag_section(tag: str, operations: list[tuple[str, str, dict[str, Any]]]) -> str:
    anchor = f"tag-{_slug(tag)}"
    parts = [f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{escape(tag)}</h2>']
    parts += [_operation(method, path, operation) for method, path, operation in operations]
    parts.append("</section>")
    return "\n".join(parts)


def _operation(method: str, path: str, operation: dict[str, Any], *, anchor: str = "") -> str:
    name = f"{method.upper()} {path}"
    anchor = anchor or _slug(f"{method} {path}")
    parts = [f'<article aria-labelledby="{anchor}">', f'<h3 id="{anchor}">{escape(name)}</h3>']
    if operation.get("summary"):
        parts.append(f"<p><strong>{prose(operation['summary'])}</strong></p>")
    for paragraph in re.split(r"\n\s*\n", operation.get("description", "")):
        if paragraph.strip():
            parts.append(f"<p>{prose(' '.join(paragraph.split()))}</p>")
    if operation.get("security"):
        parts.append("<p>Authorization: <code>Bearer &lt;token&gt;</code>.</p>")
    if operation.get("parameters"):
        parts.append(_parameters(name, operation["parameters"]))
    if "requestBody" in operation:
        body = operation["requestBody"]
        required = "required" if body.get("required") else "optional"
        parts.append(f"<p>Body ({required}): {_content_type(body)}</p>")
    parts.append(_responses(name, operation.get("responses", {})))
    parts.append("</article>")
    return "\n".join(parts)


def _parameters(name: str, parameters: list[dict[str, Any]]) -> str:
    rows = [
        f'<tr><th scope="row">{escape(p["name"])}</th><td>{escape(p["in"])}</td><td>{type_of(p.get("schema", {}))}'
        f"</td><td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{prose(p.get('description') or p.get('schema', {}).get('description', ''))}</td></tr>"
        for p in parameters
    ]
    return "\n".join(
        [
            f"<table><caption>Parameters of {escape(name)}</caption>",
            '<thead><tr><th scope="col">Parameter</th><th scope="col">In</th><th scope="col">Type</th>'
            '<th scope="col">Required</th><th scope="col">Description</th></tr></thead>',
            "<tbody>",
            *rows,
            "</tbody></table>",
        ]
    )


def _responses(name: str, responses: dict[str, Any]) -> str:
    rows = [
        f'<tr><th scope="row">{escape(status)}</th><td>{prose(answer.get("description", ""))}</td>'
        f"<td>{_content_type(answer)}</td></tr>"
        for status, answer in responses.items()
    ]
    return "\n".join(
        [
            f"<table><caption>Responses of {escape(name)}</caption>",
            '<thead><tr><th scope="col">Status</th><th scope="col">Description</th><th scope="col">Body</th></tr>'
            "</thead>",
            "<tbody>",
            *rows,
            "</tbody></table>",
        ]
    )


def _content_type(holder: dict[str, Any]) -> str:
    """The type of a body or an answer, by media type when it is not JSON; none when it has no body."""
    content: dict[str, Any] = holder.get("content", {})
    shown = []
    for media_type, described in content.items():
        kind = type_of(described.get("schema", {}))
        shown.append(kind if media_type == "application/json" else f"{kind} ({escape(media_type)})")
    return ", ".join(shown) or "none"
