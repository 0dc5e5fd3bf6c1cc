-- One row when artist_rolling_stats and artist_daily differ in row count.
SELECT r.n AS rolling_rows, d.n AS daily_rows
FROM (SELECT count(*) AS n FROM artist_rolling_stats) AS r,
     (SELECT count(*) AS n FROM artist_daily) AS d
WHERE r.n <> d.n
