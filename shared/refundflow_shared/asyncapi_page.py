"""The AsyncAPI document as a page people read: server-rendered HTML, no script and no asset from elsewhere.

Channels (what the service receives and sends, dead-letter topics apart), each message's payload fields, the
headers every event and every dead letter carries, and the types payloads share.
"""

from __future__ import annotations

import copy
from html import escape
from typing import Any

from refundflow_shared.reference_html import STYLE_ELEMENT, fields_table


def render_page(document: dict[str, Any]) -> str:
    info = document["info"]
    operations = document["operations"].values()
    by_action: dict[str, list[str]] = {"receive": [], "send": []}
    for operation in operations:
        by_action[operation["action"]].append(operation["channel"]["$ref"].rsplit("/", 1)[-1])
    sends = [c for c in by_action["send"] if not c.endswith(".dlq")]
    dead = [c for c in by_action["send"] if c.endswith(".dlq")]
    schemas = document["components"]["schemas"]
    messages = document["components"]["messages"]
    payloads = {m["payload"].get("$ref", "").rsplit("/", 1)[-1] for m in messages.values()}
    shared_types = sorted(set(schemas) - payloads)
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{escape(info["title"])}</title>{STYLE_ELEMENT}</head>',
        "<body>",
        "<header>",
        f"<h1>{escape(info['title'])}</h1>",
        f"<p>{escape(info['description'])}</p>",
        f"<p>AsyncAPI {escape(document['asyncapi'])}, version {escape(info['version'])}: "
        '<a href="asyncapi.json">the document as JSON</a>.</p>',
        '<nav aria-label="Sections"><ul>',
        '<li><a href="#receives">Receives</a></li><li><a href="#sends">Sends</a></li>',
        '<li><a href="#dead-letters">Dead-letter topics</a></li><li><a href="#headers">Headers</a></li>',
        '<li><a href="#types">Shared types</a></li>',
        "</ul></nav>",
        "</header>",
        "<main>",
        _channels("receives", "Receives", by_action["receive"], document),
        _channels("sends", "Sends", sends, document),
        _channels("dead-letters", "Dead-letter topics", dead, document),
        _headers(document),
        '<section aria-labelledby="types"><h2 id="types">Shared types</h2>',
        *(fields_table(name, schemas[name], f"type-{name}") for name in shared_types),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts)


def _channels(anchor: str, title: str, channel_ids: list[str], document: dict[str, Any]) -> str:
    parts = [f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{title}</h2>']
    if not channel_ids:
        parts.append("<p>None.</p>")
    for channel_id in sorted(channel_ids):
        channel = document["channels"][channel_id]
        heading = f"{anchor}-{channel_id}"
        parts += [
            f'<article aria-labelledby="{escape(heading)}">',
            f'<h3 id="{escape(heading)}">{escape(channel["address"])}</h3>',
            f"<p>{escape(channel['description'])}</p>",
        ]
        for ref in channel["messages"].values():
            name = ref["$ref"].rsplit("/", 1)[-1]
            message = document["components"]["messages"][name]
            parts.append(f"<p>Message <strong>{escape(message['title'])}</strong>: {escape(message['summary'])}</p>")
            payload = message["payload"].get("$ref")
            if payload is None:
                parts.append(f"<p>Payload: {escape(message['payload'].get('description', ''))}</p>")
            else:
                schema_name = payload.rsplit("/", 1)[-1]
                schema = document["components"]["schemas"][schema_name]
                parts.append(fields_table(schema_name, schema, None, level=4))
        parts.append("</article>")
    parts.append("</section>")
    return "\n".join(parts)


def _headers(document: dict[str, Any]) -> str:
    messages = list(document["components"]["messages"].values())
    event = next((m for m in messages if not m["name"].endswith(".dlq")), None)
    dead = next((m for m in messages if m["name"].endswith(".dlq")), None)
    parts = ['<section aria-labelledby="headers"><h2 id="headers">Headers</h2>']
    if event is not None:
        headers = copy.deepcopy(event["headers"])
        # One message's constants: say instead what they hold for every message.
        headers["properties"]["ce_type"] = {"type": "string", "description": "the event type, as the topic"}
        dataschema = "the payload's schema version, urn:refundflow:<type>:v<n>"
        headers["properties"]["ce_dataschema"] = {"type": "string", "description": dataschema}
        parts.append(fields_table("CloudEvents headers of every event", headers, "headers-event"))
    if dead is not None:
        parts.append(fields_table("Headers of every dead letter", dead["headers"], "headers-dead-letter"))
        parts.append("<p>A dead letter also keeps the original message's headers.</p>")
    parts.append("</section>")
    return "\n".join(parts)
