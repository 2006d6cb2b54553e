-- A dead-letter topic deleted and created again (a common way to purge one) numbers its records from 0 again: a
-- replayed letter is its position and its event, or a new letter at an old position would read as replayed (and
-- `dlq replay --all` would skip it).
ALTER TABLE dlq_replays DROP CONSTRAINT dlq_replays_pkey;
CREATE UNIQUE INDEX dlq_replays_letter ON dlq_replays (dlq_topic, dlq_partition, dlq_offset, coalesce(event_id, ''));
