-- People: a merchant's team signs in to the dashboard. API keys stay for machines.
CREATE TABLE merchant_users (
    id            text PRIMARY KEY,
    merchant_id   text        NOT NULL REFERENCES merchants (id),
    email         text        NOT NULL CHECK (length(email) <= 254),
    display_name  text,
    role          text        NOT NULL CHECK (role IN ('owner', 'approver', 'viewer')),
    password_hash text,        -- Argon2id; NULL until the invite is accepted
    invited_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    removed_at    timestamptz  -- kept, so the audit trail still names who acted
);
-- One live account per address: the sign-in form asks for an email, not a merchant.
CREATE UNIQUE INDEX merchant_users_live_email ON merchant_users (lower(email)) WHERE removed_at IS NULL;
CREATE INDEX merchant_users_by_merchant ON merchant_users (merchant_id, created_at);

-- One-time links (invites, password resets): only a SHA-256 digest of the token is kept.
CREATE TABLE one_time_links (
    token_hash bytea PRIMARY KEY,
    purpose    text        NOT NULL CHECK (purpose IN ('invite', 'password_reset')),
    user_id    text        NOT NULL REFERENCES merchant_users (id),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX one_time_links_by_user ON one_time_links (user_id);

-- Signed-in browsers. The cookie holds a random id; only its digest is kept. The CSRF token is bound to it.
CREATE TABLE dashboard_sessions (
    id_hash    bytea PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES merchant_users (id),
    csrf_token text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_by_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
