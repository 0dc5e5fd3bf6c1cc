-- A daily-counts source holds one row per series and day. Two rows in ONE file are both
-- quarantined on load (each reason names the other's line); this catches two FILES giving the
-- same series-day (say a day exported twice under two names), which no file alone can see.
SELECT series_id, ds, count(*) AS rows_for_the_day, min(source_file) AS first_file, max(source_file) AS last_file
FROM stg_daily_plays
GROUP BY series_id, ds
HAVING count(*) > 1
