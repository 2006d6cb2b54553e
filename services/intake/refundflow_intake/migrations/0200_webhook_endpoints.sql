-- Merchant webhook endpoints and team notification channels. Every change is announced to the notifier
-- (webhook_endpoint.configured, notification_settings.configured) in the same transaction, via the outbox.
CREATE TABLE webhook_endpoints (
    id               text PRIMARY KEY,
    merchant_id      text        NOT NULL REFERENCES merchants (id),
    url              text        NOT NULL,
    event_types      text[]      NOT NULL,
    enabled          boolean     NOT NULL DEFAULT true,
    encrypted_secret text        NOT NULL,  -- AES-GCM under WEBHOOK_SECRET_KEY; the plaintext is shown once
    version          integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id, created_at) WHERE deleted_at IS NULL;

CREATE TABLE notification_settings (
    merchant_id         text PRIMARY KEY REFERENCES merchants (id),
    team_email          text,
    slack_webhook_url   text,
    sender_name         text,
    reply_to            text,
    review_target       text,
    refund_process_time text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
