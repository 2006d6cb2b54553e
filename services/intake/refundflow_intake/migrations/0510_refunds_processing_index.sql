-- The metrics' stuck-refunds gauge reads the processing refunds on every scrape: an index, not a table scan.
CREATE INDEX refunds_processing ON refunds (updated_at) WHERE status = 'processing';
