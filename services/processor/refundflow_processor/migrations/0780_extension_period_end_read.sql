-- The period end an extension's new end was fixed from: the change reads the subscription again before each try,
-- and one that renewed meanwhile (its period end moved) has its new end fixed again from the renewed end. Rows from
-- before whose end is fixed: their new end less the days granted, the end they read.
ALTER TABLE subscription_extensions ADD COLUMN from_period_end timestamptz;
-- (Whole days of 86,400 seconds, as the processor adds them: a day interval would follow the session's time zone.)
UPDATE subscription_extensions SET from_period_end = until - make_interval(secs => days * 86400) WHERE until IS NOT NULL;
