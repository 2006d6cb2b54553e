-- Refunds at the provider made for a refund id of ours (metadata.refund_id) that the processor has no record of:
-- after a database restore, our own refund, whose approval the rewound consumer has still to read again. The sync
-- job never books one as made outside Refundflow; it alerts once when one stays unrecorded. A row stays as a
-- record once the approval comes.
CREATE TABLE unrecorded_provider_refunds (
    provider_refund_id text PRIMARY KEY,
    payment_id         text        NOT NULL,
    refund_id          text        NOT NULL,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    alerted_at         timestamptz
);
-- From here on, attempt 1's created_at (when its key may first have been used) is the approval's time, not the
-- row's: refund_attempts.created_at reads as the key's age.
