-- Refund policies saved before their input rules tightened pass today's rules, or reading them fails (every page
-- and refund of the merchant that reads the policy): what the rules refuse is made what they take, in place, and
-- what they take stays as it is. The limits are refund_policy.py's and money.py's.
--   process_time, a category: each run of control characters (Unicode Cc, Zl, Zp) a space, trimmed, at most 100
--     characters; one left empty is dropped (the default, or the merchant's policy under an override, applies);
--   more than 50 categories, 20 reasons: repeats dropped, then the first ones kept;
--   an approval threshold above 10^12 minor units: 10^12 (no payment is larger, so it approves the same).

CREATE FUNCTION pg_temp.one_line(value text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN value ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]' OR char_length(value) NOT BETWEEN 1 AND 100
        THEN nullif(left(btrim(regexp_replace(value, '[\x01-\x1f\x7f-\x9f\u2028\u2029]+', ' ', 'g')), 100), '')
        ELSE value
    END
$$;

-- The first ``most`` different items, in their order; the list as it is when it holds no more than that.
CREATE FUNCTION pg_temp.at_most(items jsonb, most integer) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_array_length(items) <= most THEN items ELSE (
        SELECT jsonb_agg(item ORDER BY first)
          FROM (SELECT item, min(n) AS first FROM jsonb_array_elements(items) WITH ORDINALITY AS e (item, n)
                 GROUP BY item ORDER BY first LIMIT most) AS kept)
    END
$$;

CREATE FUNCTION pg_temp.categories(items jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_temp.at_most(coalesce(jsonb_agg(to_jsonb(line) ORDER BY n), '[]'), 50)
      FROM (SELECT pg_temp.one_line(item #>> '{}') AS line, n
              FROM jsonb_array_elements(items) WITH ORDINALITY AS e (item, n)) AS lines
     WHERE line IS NOT NULL
$$;

CREATE FUNCTION pg_temp.threshold(amount jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT to_jsonb(least(amount::text::numeric, 1000000000000))
$$;

CREATE FUNCTION pg_temp.readable(policy jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(policy -> 'process_time') = 'string' THEN
        policy := CASE WHEN pg_temp.one_line(policy ->> 'process_time') IS NULL THEN policy - 'process_time'
                       ELSE jsonb_set(policy, '{process_time}', to_jsonb(pg_temp.one_line(policy ->> 'process_time')))
                  END;
    END IF;
    IF jsonb_typeof(policy -> 'excluded_categories') = 'array' THEN
        policy := jsonb_set(policy, '{excluded_categories}', pg_temp.categories(policy -> 'excluded_categories'));
    END IF;
    IF jsonb_typeof(policy -> 'accepted_reasons') = 'array' THEN
        policy := jsonb_set(policy, '{accepted_reasons}', pg_temp.at_most(policy -> 'accepted_reasons', 20));
    END IF;
    IF jsonb_typeof(policy #> '{auto_approve,reasons}') = 'array' THEN
        policy := jsonb_set(policy, '{auto_approve,reasons}', pg_temp.at_most(policy #> '{auto_approve,reasons}', 20));
    END IF;
    IF jsonb_typeof(policy #> '{auto_approve,max_amount,amount}') = 'number' THEN
        policy := jsonb_set(
            policy, '{auto_approve,max_amount,amount}', pg_temp.threshold(policy #> '{auto_approve,max_amount,amount}')
        );
    END IF;
    IF jsonb_typeof(policy #> '{second_approval_above,amount}') = 'number' THEN
        policy := jsonb_set(
            policy, '{second_approval_above,amount}', pg_temp.threshold(policy #> '{second_approval_above,amount}')
        );
    END IF;
    RETURN policy;
END
$$;

UPDATE refund_policies SET policy = pg_temp.readable(policy) WHERE policy <> pg_temp.readable(policy);

-- The helpers would outlive the migration in its session, where a later one may name its own alike.
DROP FUNCTION pg_temp.readable(jsonb), pg_temp.threshold(jsonb), pg_temp.categories(jsonb),
    pg_temp.at_most(jsonb, integer), pg_temp.one_line(text);
