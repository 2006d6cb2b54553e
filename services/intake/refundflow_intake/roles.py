"""Who on a merchant's team may do what. No I/O here; every dashboard action asks ``require`` first."""

from __future__ import annotations

from enum import StrEnum

from refundflow_intake.domain import DomainError


class Role(StrEnum):
    OWNER = "owner"  # everything, including the team, API keys, webhooks and the policy
    APPROVER = "approver"  # decides refunds
    VIEWER = "viewer"  # reads


class Permission(StrEnum):
    DECIDE_REFUNDS = "decide_refunds"
    CANCEL_SUBSCRIPTIONS = "cancel_subscriptions"
    MANAGE_POLICY = "manage_policy"
    MANAGE_WEBHOOKS = "manage_webhooks"
    MANAGE_TEAM = "manage_team"
    MANAGE_SETTINGS = "manage_settings"
    MANAGE_API_KEYS = "manage_api_keys"


_GRANTED: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.APPROVER: frozenset({Permission.DECIDE_REFUNDS, Permission.CANCEL_SUBSCRIPTIONS}),
    Role.VIEWER: frozenset(),
}


class NotAllowedForRole(DomainError):
    code = "not_allowed_for_role"
    in_api = False


def allows(role: Role, permission: Permission) -> bool:
    return permission in _GRANTED[role]


def roles_with(permission: Permission) -> list[Role]:
    return [role for role in Role if allows(role, permission)]


def require(role: Role, permission: Permission) -> None:
    """Raise unless ``role`` may do it: roles are enforced here, on the server, whatever a page shows."""
    if not allows(role, permission):
        raise NotAllowedForRole(f"a {role.value} may not {permission.value.replace('_', ' ')}")
