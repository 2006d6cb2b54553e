"""A merchant's team: people with a role, invited by a one-time link (72 h) that sets their password.

Each use case runs in the caller's transaction: the change and the event that emails the person commit
together. Those that hash a password (~100 ms, off the event loop) take the pool instead: they read, hash with no
connection held, then write in a short transaction of their own that checks nothing changed meanwhile.
The link travels to the notifier sealed (``SecretBox``, bound to the user id).

An address has one live account on the whole platform; an invitation nobody accepted holds it only while its link
can still be used (a resend renews it), and never past INVITATION_LIFE after the first invite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from refundflow_intake import actors, dashboard_sessions, passwords
from refundflow_intake.domain import DomainError, NotFound
from refundflow_intake.merchant_accounts import lock_merchant, new_id
from refundflow_intake.one_time_links import (
    LinkPurpose,
    create_link,
    has_usable_link,
    revoke_links,
    usable_link_owner,
    use_link,
)
from refundflow_intake.roles import Permission, Role, allows
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import PasswordResetRequested, TeamMemberInvited
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)

INVITE_VALID_FOR = timedelta(hours=72)
# An invitation's whole life, resends included: were each resend to add 72 hours, a merchant resending every 3 days
# would keep the address from every other merchant for ever.
INVITATION_LIFE = timedelta(days=7)
RESET_VALID_FOR = timedelta(hours=1)
Row = dict[str, Any]
_MEMBER_COLUMNS = "id, merchant_id, email, display_name, role, created_at, activated_at, removed_at"
_ONE_ACCOUNT_PER_ADDRESS = "merchant_users_live_email"  # the unique index (migration 0400)


class EmailAlreadyRegistered(DomainError):
    code = "email_already_registered"


class InvitationEnded(DomainError):
    """The invitation is past its whole life (INVITATION_LIFE from the first invite): no resend renews it."""

    code = "invitation_ended"
    in_api = False


@dataclass(frozen=True)
class InviteSent:
    url: str  # shown once
    expires_at: datetime
    cut_short: bool  # the link ends with the invitation, before INVITE_VALID_FOR


class MemberNotFound(NotFound):
    code = "member_not_found"
    in_api = False


class LastOwner(DomainError):
    code = "last_owner"
    in_api = False


@dataclass(frozen=True)
class AccountLinks:
    """Where links point (the dashboard's public address) and the box that seals them for the notifier."""

    base_url: str
    box: SecretBox | None

    def url(self, purpose: LinkPurpose, token: str) -> str:
        path = "invite" if purpose is LinkPurpose.INVITE else "reset-password"
        return f"{self.base_url.rstrip('/')}/dashboard/{path}/{token}"

    def sealed(self, url: str, user_id: str) -> str | None:
        return self.box.seal(url, context=user_id) if self.box else None


async def invite(
    conn: asyncpg.Connection,
    links: AccountLinks,
    merchant_id: str,
    *,
    email: str,
    role: Role,
    invited_by: str | None,
    now: datetime,
) -> tuple[Row, str]:
    """A new member, invited: (the member, the invite URL, shown once). The notifier emails the URL."""
    await lock_merchant(conn, merchant_id)
    await _release_lapsed_invitation(conn, email, now=now)
    await _check_address_free(conn, email)
    member = await _insert_member(conn, merchant_id, email=email, role=role, invited_by=invited_by, now=now)
    sent = await _send_invite(conn, links, member, invited_by=invited_by, now=now)
    return member, sent.url


async def _insert_member(
    conn: asyncpg.Connection, merchant_id: str, *, email: str, role: Role, invited_by: str | None, now: datetime
) -> Row:
    try:
        member = await conn.fetchrow(
            "INSERT INTO merchant_users (id, merchant_id, email, role, invited_by, created_at)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_MEMBER_COLUMNS}",
            new_id("usr"),
            merchant_id,
            email,
            role.value,
            invited_by,
            now,
        )
    except asyncpg.UniqueViolationError as exc:
        # Another merchant invited the address at the same moment: both found it free, theirs was written first.
        if exc.constraint_name != _ONE_ACCOUNT_PER_ADDRESS:
            raise
        raise EmailAlreadyRegistered("this address has an open invitation to a Refundflow dashboard") from exc
    assert member is not None
    return dict(member)


async def _release_lapsed_invitation(conn: asyncpg.Connection, email: str, *, now: datetime) -> None:
    """An invitation nobody accepted stops holding its address once its link lapsed, or its whole life ended: it
    leaves its team, so any merchant may invite the address again (else whoever typed it first, or a hostile
    merchant, would keep it)."""
    # The row is locked before its links are read: a resend holding it first has committed its new link by then.
    pending = await conn.fetchrow(
        "SELECT id, created_at FROM merchant_users WHERE lower(email) = lower($1) AND removed_at IS NULL"
        " AND activated_at IS NULL FOR UPDATE",
        email,
    )
    if pending is None:
        return
    within_life = now < pending["created_at"] + INVITATION_LIFE
    if within_life and await has_usable_link(conn, pending["id"], LinkPurpose.INVITE, now=now):
        return
    await conn.execute("UPDATE merchant_users SET removed_at = $2 WHERE id = $1", pending["id"], now)


async def _check_address_free(conn: asyncpg.Connection, email: str) -> None:
    """One account per address on the whole platform (the sign-in form asks for an email, not a merchant)."""
    joined: bool | None = await conn.fetchval(
        "SELECT activated_at IS NOT NULL FROM merchant_users WHERE lower(email) = lower($1) AND removed_at IS NULL",
        email,
    )
    if joined is None:
        return
    if joined:
        raise EmailAlreadyRegistered("this address already has a Refundflow dashboard account")
    raise EmailAlreadyRegistered("this address has an open invitation to a Refundflow dashboard")


async def resend_invite(
    conn: asyncpg.Connection, links: AccountLinks, merchant_id: str, member_id: str, *, by: str, now: datetime
) -> InviteSent:
    """A fresh invite link for someone who has not joined yet; earlier links stop working. It lasts no longer than
    the invitation (INVITATION_LIFE from the first invite); past that, InvitationEnded. The invitation is the
    resender's from now on: they saw its link, so it ends with their right to invite."""
    member = await get_member(conn, merchant_id, member_id, for_update=True)  # not released meanwhile
    if member["activated_at"] is not None:
        raise EmailAlreadyRegistered("this person already joined: they can reset their password instead")
    if now >= member["created_at"] + INVITATION_LIFE:
        raise InvitationEnded(
            f"this invitation ended {INVITATION_LIFE.days} days after the first invite, and a resend does not"
            " extend it: remove the person and invite them again"
        )
    await conn.execute("UPDATE merchant_users SET invited_by = $2 WHERE id = $1", member_id, by)
    return await _send_invite(conn, links, member, invited_by=by, now=now)


async def _send_invite(
    conn: asyncpg.Connection, links: AccountLinks, member: Row, *, invited_by: str | None, now: datetime
) -> InviteSent:
    left = member["created_at"] + INVITATION_LIFE - now
    valid_for = min(INVITE_VALID_FOR, left)
    token, expires_at = await create_link(conn, LinkPurpose.INVITE, member["id"], now=now, valid_for=valid_for)
    url = links.url(LinkPurpose.INVITE, token)
    sent = InviteSent(url=url, expires_at=expires_at, cut_short=valid_for < INVITE_VALID_FOR)
    sealed = links.sealed(url, member["id"])
    if sealed is None:
        log.warning("invite_not_emailed", why="WEBHOOK_SECRET_KEY is not set", user_id=member["id"])
        return sent
    merchant_name = await conn.fetchval("SELECT name FROM merchants WHERE id = $1", member["merchant_id"])
    inviter = await display_of(conn, invited_by) if invited_by else None
    event = TeamMemberInvited(
        merchant_id=member["merchant_id"],
        user_id=member["id"],
        email=member["email"],
        sealed_url=sealed,
        expires_at=expires_at,
        merchant_name=merchant_name[:200],
        role=member["role"],
        invited_by=inviter,
    )
    await add_event(conn, event, source=INTAKE.source)
    return sent


async def accept_invite(
    pool: asyncpg.Pool, token: str, *, password: str, display_name: str | None, now: datetime
) -> Row:
    """Use the invite once: set the password (and name); the member is active from now on."""
    password_hash = await _new_password_hash(pool, token, LinkPurpose.INVITE, password, now=now)
    async with pool.acquire() as conn, conn.transaction():
        member = await _use_link_of_live_member(conn, token, LinkPurpose.INVITE, now=now)
        row = await conn.fetchrow(
            "UPDATE merchant_users SET password_hash = $2, display_name = coalesce($3, display_name),"
            f" activated_at = coalesce(activated_at, $4) WHERE id = $1 RETURNING {_MEMBER_COLUMNS}",
            member["id"],
            password_hash,
            display_name or None,
            now,
        )
    return dict(row)


async def _new_password_hash(
    pool: asyncpg.Pool, token: str, purpose: LinkPurpose, password: str, *, now: datetime
) -> str:
    """The hash of the new password a one-time link sets, made with no connection held (it takes ~100 ms). The
    link is checked first, so that a made-up link costs no hash; it is used (once) in the transaction that stores
    the hash, where a use or a removal that came meanwhile refuses it."""
    async with pool.acquire() as conn:
        member = await _live_member(conn, await usable_link_owner(conn, token, purpose, now=now))
    passwords.check_acceptable(password, email=member["email"])
    return await passwords.hash_password(password)


async def _use_link_of_live_member(conn: asyncpg.Connection, token: str, purpose: LinkPurpose, *, now: datetime) -> Row:
    """Use a one-time link of a member still on the team, whose row stays locked until the caller commits.

    The member's row is locked before the link, the order removal takes them in (the member, then their links):
    using the link first deadlocked with a removal under way. A member removed meanwhile is MemberNotFound."""
    user_id = await usable_link_owner(conn, token, purpose, now=now)
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM merchant_users WHERE id = $1 AND removed_at IS NULL FOR UPDATE", user_id
    )
    if row is None:
        raise MemberNotFound("this account was removed")
    await use_link(conn, token, purpose, now=now)  # LinkNotUsable if a resend or another use came first
    return dict(row)


async def request_password_reset(conn: asyncpg.Connection, links: AccountLinks, email: str, *, now: datetime) -> None:
    """Email a reset link to an active account with this address; nothing (and no sign of it) otherwise."""
    member = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM merchant_users WHERE lower(email) = lower($1) AND removed_at IS NULL"
        " AND activated_at IS NOT NULL",
        email,
    )
    if member is None:
        return
    token, expires_at = await create_link(
        conn, LinkPurpose.PASSWORD_RESET, member["id"], now=now, valid_for=RESET_VALID_FOR
    )
    sealed = links.sealed(links.url(LinkPurpose.PASSWORD_RESET, token), member["id"])
    if sealed is None:
        log.warning("password_reset_not_emailed", why="WEBHOOK_SECRET_KEY is not set", user_id=member["id"])
        return
    event = PasswordResetRequested(
        merchant_id=member["merchant_id"],
        user_id=member["id"],
        email=member["email"],
        sealed_url=sealed,
        expires_at=expires_at,
    )
    await add_event(conn, event, source=INTAKE.source)


async def reset_password(pool: asyncpg.Pool, token: str, *, password: str, now: datetime) -> Row:
    """Use the reset link once: a new password, and every session of the account ends."""
    password_hash = await _new_password_hash(pool, token, LinkPurpose.PASSWORD_RESET, password, now=now)
    async with pool.acquire() as conn, conn.transaction():
        member = await _use_link_of_live_member(conn, token, LinkPurpose.PASSWORD_RESET, now=now)
        await conn.execute("UPDATE merchant_users SET password_hash = $2 WHERE id = $1", member["id"], password_hash)
        await dashboard_sessions.end_all(conn, member["id"])
    return member


@dataclass(frozen=True)
class Verified:
    """A member whose password matched ``password_hash``, read before the check (no connection held meanwhile)."""

    member: Row
    password_hash: str


async def authenticate(pool: asyncpg.Pool, email: str, password: str) -> Verified | None:
    """The active member with this email and password, or None (as slow either way). The hash is checked with no
    connection held; ``still_verified`` then tells whether it is still theirs (a reset may have come meanwhile)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_MEMBER_COLUMNS}, password_hash FROM merchant_users WHERE lower(email) = lower($1)"
            " AND removed_at IS NULL AND password_hash IS NOT NULL",
            email[:320],
        )
    stored = row["password_hash"] if row else None
    if not await passwords.verify(stored, password) or row is None or stored is None:
        return None
    member = {k: v for k, v in dict(row).items() if k != "password_hash"}
    if passwords.needs_rehash(stored):
        rehashed = await passwords.hash_password(password)
        async with pool.acquire() as conn:  # only over the hash checked: a reset meanwhile keeps its own
            if await conn.fetchval(
                "UPDATE merchant_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2 RETURNING id",
                member["id"],
                stored,
                rehashed,
            ):
                stored = rehashed
    return Verified(member=member, password_hash=stored)


async def still_verified(conn: asyncpg.Connection, verified: Verified) -> bool:
    """Whether the member is still on the team with the password checked, their row locked until the caller
    commits: a session started in that transaction cannot outlive a reset or a removal that came meanwhile."""
    found = await conn.fetchval(
        "SELECT true FROM merchant_users WHERE id = $1 AND password_hash = $2 AND removed_at IS NULL FOR UPDATE",
        verified.member["id"],
        verified.password_hash,
    )
    return bool(found)


async def reverified(pool: asyncpg.Pool, verified: Verified, password: str) -> Verified | None:
    """When ``still_verified`` found another hash: ``verified`` again, against the hash stored now, if ``password``
    matches it (another sign-in rehashed the same password meanwhile), else None (a reset or a removal came). The
    hash is checked with no connection held, as in ``authenticate``."""
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT password_hash FROM merchant_users WHERE id = $1 AND removed_at IS NULL", verified.member["id"]
        )
    if stored is None or not await passwords.verify(stored, password):
        return None
    return Verified(member=verified.member, password_hash=stored)


async def change_role(conn: asyncpg.Connection, merchant_id: str, member_id: str, role: Role, *, now: datetime) -> Row:
    """A member demoted so that they may no longer invite loses the invitations they sent and nobody accepted."""
    await lock_merchant(conn, merchant_id)  # two owners demoting each other cannot leave none
    member = await get_member(conn, merchant_id, member_id)
    if member["role"] == Role.OWNER and role is not Role.OWNER:
        await _keep_an_owner(conn, merchant_id, leaving=member_id)
    row = await conn.fetchrow(
        f"UPDATE merchant_users SET role = $2 WHERE id = $1 RETURNING {_MEMBER_COLUMNS}", member_id, role.value
    )
    if not allows(role, Permission.MANAGE_TEAM):
        await _cancel_invitations_sent_by(conn, merchant_id, member_id, now=now)
    return dict(row)


async def remove(conn: asyncpg.Connection, merchant_id: str, member_id: str, *, now: datetime) -> None:
    """The member loses access at once (sessions end, links stop working), and so do the invitations they sent and
    nobody accepted; the audit trail keeps their name."""
    await lock_merchant(conn, merchant_id)
    member = await get_member(conn, merchant_id, member_id)
    if member["role"] == Role.OWNER:
        await _keep_an_owner(conn, merchant_id, leaving=member_id)
    await _leave(conn, member_id, now=now)
    await _cancel_invitations_sent_by(conn, merchant_id, member_id, now=now)


async def _leave(conn: asyncpg.Connection, member_id: str, *, now: datetime) -> None:
    await conn.execute("UPDATE merchant_users SET removed_at = $2 WHERE id = $1", member_id, now)
    await dashboard_sessions.end_all(conn, member_id)
    await revoke_links(conn, member_id, now=now)


async def _cancel_invitations_sent_by(
    conn: asyncpg.Connection, merchant_id: str, member_id: str, *, now: datetime
) -> None:
    """The inviter saw each link they sent (the page shows it): one removed or demoted would otherwise come back
    through an invitation of their own, to an address of theirs. An invitation accepted meanwhile stays (locked
    first, it is seen as joined): its member is on the team page, for the owners to remove."""
    pending = await conn.fetch(
        "SELECT id FROM merchant_users WHERE merchant_id = $1 AND invited_by = $2 AND removed_at IS NULL"
        " AND activated_at IS NULL ORDER BY id FOR UPDATE",
        merchant_id,
        actors.person(member_id),
    )
    for invitation in pending:
        await _leave(conn, invitation["id"], now=now)


async def _keep_an_owner(conn: asyncpg.Connection, merchant_id: str, *, leaving: str) -> None:
    """Refuse to let ``leaving`` stop being an owner if no other owner has joined: an invited owner may never
    accept (a mistyped address), and then nobody could manage the team."""
    others = await conn.fetchval(
        "SELECT count(*) FROM merchant_users WHERE merchant_id = $1 AND role = 'owner' AND removed_at IS NULL"
        " AND activated_at IS NOT NULL AND id <> $2",
        merchant_id,
        leaving,
    )
    if others == 0:
        raise LastOwner("a merchant keeps at least one owner who has joined: make someone else owner first")


async def get_member(conn: asyncpg.Connection, merchant_id: str, member_id: str, *, for_update: bool = False) -> Row:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM merchant_users WHERE id = $1 AND merchant_id = $2 AND removed_at IS NULL{lock}",
        member_id,
        merchant_id,
    )
    if row is None:
        raise MemberNotFound(f"no team member {member_id}")
    return dict(row)


async def _live_member(conn: asyncpg.Connection, user_id: str) -> Row:
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM merchant_users WHERE id = $1 AND removed_at IS NULL", user_id
    )
    if row is None:
        raise MemberNotFound("this account was removed")
    return dict(row)


async def get_any_member(conn: asyncpg.Connection, user_id: str) -> Row:
    """A live member of any merchant, with the merchant's name (for the pages a one-time link opens)."""
    member = await _live_member(conn, user_id)
    member["merchant_name"] = await conn.fetchval("SELECT name FROM merchants WHERE id = $1", member["merchant_id"])
    return member


async def list_members(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {_MEMBER_COLUMNS} FROM merchant_users WHERE merchant_id = $1 AND removed_at IS NULL"
        " ORDER BY created_at, id",
        merchant_id,
    )
    return [dict(r) for r in rows]


async def display_of(conn: asyncpg.Connection, actor: str | None) -> str | None:
    """A person's name as the audit trail shows it: their display name and email, or their email."""
    if actor is None or not actors.is_person(actor):
        return actor
    row = await conn.fetchrow(
        "SELECT email, display_name FROM merchant_users WHERE id = $1", actor.removeprefix(actors.PERSON)
    )
    if row is None:
        return actor
    name = f"{row['display_name']} <{row['email']}>" if row["display_name"] else row["email"]
    return str(name)[:200]
