-- Artists whose calendar does not run, without a gap, from the log's first to last day.
-- date_diff, not hi - lo: a date minus a date is a number of days in DuckDB but an interval
-- in Spark, and this test runs on both engines.
WITH bounds AS (SELECT min(ds) AS lo, max(ds) AS hi FROM artist_daily),
per_artist AS (
    SELECT artist_id, min(ds) AS lo, max(ds) AS hi, count(DISTINCT ds) AS days
    FROM artist_daily
    GROUP BY artist_id
)
SELECT per_artist.*
FROM per_artist, bounds
WHERE per_artist.lo <> bounds.lo
   OR per_artist.hi <> bounds.hi
   OR per_artist.days <> date_diff('day', bounds.lo, bounds.hi) + 1
