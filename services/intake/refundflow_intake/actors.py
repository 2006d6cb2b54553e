"""How the audit trail and the approvals name who acted: a person, an API key, a customer or a rule.

A person is named by their account id (``user:<id>``), so that approvals count distinct people and the trail
still names them after they leave the team; the timeline shows their email next to it.
"""

from __future__ import annotations

PERSON = "user:"
API_KEY = "api_key:"
CUSTOMER = "customer:"
AUTO_APPROVER = "policy:auto_approve"


def person(user_id: str) -> str:
    return f"{PERSON}{user_id}"


def api_key(key_id: str) -> str:
    return f"{API_KEY}{key_id}"


def customer(email: str) -> str:
    return f"{CUSTOMER}{email}"


def is_person(actor: str) -> bool:
    return actor.startswith(PERSON)
