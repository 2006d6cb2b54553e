-- The deliveries leased now, which each claim counts per endpoint and merchant: a retry clears its lease, so they are
-- few, where the pending deliveries (an endpoint's backlog waiting out its backoff) may be many; read through this,
-- a claim's count no longer reads that backlog.
CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (endpoint_id, merchant_id)
    WHERE status = 'pending' AND locked_until IS NOT NULL;
