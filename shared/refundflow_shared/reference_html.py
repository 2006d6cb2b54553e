"""What both reference pages (the AsyncAPI page, ``/asyncapi``, and the API reference, ``/docs``) are made of: the
headers that keep them loading nothing, a schema's fields as a table, and a JSON Schema type in words."""

from __future__ import annotations

import base64
import hashlib
import re
from html import escape
from typing import Any

# Set in the page itself (``STYLE_ELEMENT``), allowed by its hash: the pages load nothing, from anywhere.
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;color:#1a1a2e;max-width:72rem;margin:0 auto;padding:1rem 1.5rem}"
    "h1,h2{line-height:1.25}h2{border-bottom:2px solid #d8dbe5;padding-bottom:.25rem;margin-top:2.5rem}"
    "h3{font-family:ui-monospace,monospace;font-size:1.05rem;margin:2rem 0 .5rem}"
    "article+article{border-top:1px solid #e4e6ee}"
    "table{border-collapse:collapse;margin:.75rem 0 1.25rem;width:100%}"
    "caption{text-align:left;font-weight:600;padding:.25rem 0}"
    "th,td{border:1px solid #d8dbe5;padding:.35rem .6rem;text-align:left;vertical-align:top}"
    "thead th{background:#f2f3f8}"
    "code{font-family:ui-monospace,monospace;font-size:.9em;background:#f2f3f8;padding:0 .2em;border-radius:3px}"
    "a{color:#3730a3}a:focus-visible{outline:3px solid #3730a3;outline-offset:2px}"
    "nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;list-style:none;padding:0}"
)
STYLE_ELEMENT = f"<style>{STYLE}</style>"
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

_CODE = re.compile(r"``(.+?)``|`(.+?)`")


def prose(text: str) -> str:
    """Text from a docstring or a description as HTML: escaped, its `code` (or ``code``) spans marked as such."""
    return _CODE.sub(lambda m: f"<code>{m.group(1) or m.group(2)}</code>", escape(text))


def fields_table(title: str, schema: dict[str, Any], anchor: str | None, level: int = 3) -> str:
    """A heading, the schema's description, and a table of its fields: name, type, required, description."""
    required = set(schema.get("required", []))
    rows = [
        f'<tr><th scope="row">{escape(name)}</th><td>{type_of(field)}</td>'
        f"<td>{'yes' if name in required else 'no'}</td><td>{prose(_description(field))}</td></tr>"
        for name, field in schema.get("properties", {}).items()
    ]
    heading_id = f' id="{escape(anchor)}"' if anchor else ""
    caption = f"Fields of {title}"
    parts = [f"<h{level}{heading_id}>{escape(title)}</h{level}>"]
    if schema.get("description"):
        parts.append(f"<p>{prose(schema['description'])}</p>")
    parts += [
        f"<table><caption>{escape(caption)}</caption>",
        '<thead><tr><th scope="col">Field</th><th scope="col">Type</th><th scope="col">Required</th>'
        '<th scope="col">Description</th></tr></thead>',
        "<tbody>",
        *rows,
        "</tbody></table>",
    ]
    return "\n".join(parts)


def type_of(field: dict[str, Any]) -> str:
    """A field's JSON Schema type in words: a link for a shared type, ``or`` between alternatives."""
    if "$ref" in field:
        name = field["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#type-{escape(name)}">{escape(name)}</a>'
    for alternatives in ("anyOf", "oneOf"):
        if alternatives in field:
            return " or ".join(type_of(option) for option in field[alternatives])
    if "const" in field:
        return f"<code>{escape(str(field['const']))}</code>"
    if "enum" in field:
        return " | ".join(f"<code>{escape(str(value))}</code>" for value in field["enum"])
    kind = str(field.get("type", "any"))
    if kind == "array":
        return f"list of {type_of(field.get('items', {}))}"
    if kind == "object" and isinstance(field.get("additionalProperties"), dict):
        return f"map to {type_of(field['additionalProperties'])}"
    limits = [
        f"{word} {field[key]}"
        for key, word in (
            ("format", "format"),
            ("maxLength", "at most"),
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
        )
        if key in field
    ]
    return escape(kind + (f" ({', '.join(limits)})" if limits else ""))


def _description(field: dict[str, Any]) -> str:
    return str(field.get("description", ""))
