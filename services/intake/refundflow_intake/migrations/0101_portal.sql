-- Attempts counted by rate limits (portal submissions), pruned as their window passes.
CREATE TABLE rate_limit_attempts (
    id     bigserial PRIMARY KEY,
    bucket text        NOT NULL,
    at     timestamptz NOT NULL
);
CREATE INDEX rate_limit_attempts_by_bucket ON rate_limit_attempts (bucket, at);
