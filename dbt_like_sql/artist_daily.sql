-- Plays, downloads and collects per artist and day on a dense calendar: every artist
-- with any action gets one row for every day from the first to the last day of the log,
-- with zeros on days without actions (the forecasters assume no gaps).
-- Built in full from the sparse artist_day_actions every time: it is artists x days, small,
-- and a new artist or a longer log changes rows on every day, which no day filter can cut.
-- The calendar is built in three steps, not as CAST(unnest(generate_series(...)) AS DATE):
-- Spark (sqlglot turns unnest into EXPLODE) allows a generator only at the top of a SELECT
-- list, never inside a cast or next to an aggregate, and this file runs on both engines.
WITH bounds AS (
    SELECT min(ds) AS first_day, max(ds) AS last_day FROM artist_day_actions
),
days AS (
    SELECT unnest(generate_series(first_day, last_day, INTERVAL 1 DAY)) AS day FROM bounds
),
calendar AS (
    SELECT CAST(day AS DATE) AS ds FROM days
),
artists AS (
    SELECT DISTINCT artist_id FROM artist_day_actions
)
SELECT
    artists.artist_id,
    calendar.ds,
    coalesce(daily.plays, 0) AS plays,
    coalesce(daily.downloads, 0) AS downloads,
    coalesce(daily.collects, 0) AS collects,
    coalesce(daily.listeners, 0) AS listeners,
    coalesce(daily.active_songs, 0) AS active_songs
FROM artists
CROSS JOIN calendar
LEFT JOIN artist_day_actions AS daily ON daily.artist_id = artists.artist_id AND daily.ds = calendar.ds
ORDER BY artists.artist_id, calendar.ds
