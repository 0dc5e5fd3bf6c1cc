-- Plays, downloads and collects per artist and day on a dense calendar: every artist
-- with any action gets one row for every day from the first to the last day of the log,
-- with zeros on days without actions (the forecasters assume no gaps).
WITH daily AS (
    SELECT
        s.artist_id,
        a.ds,
        count(*) FILTER (WHERE a.action_type = 1) AS plays,
        count(*) FILTER (WHERE a.action_type = 2) AS downloads,
        count(*) FILTER (WHERE a.action_type = 3) AS collects,
        count(DISTINCT a.user_id) AS listeners,
        count(DISTINCT a.song_id) AS active_songs
    FROM stg_user_actions AS a
    JOIN stg_songs AS s ON s.song_id = a.song_id
    GROUP BY s.artist_id, a.ds
),
calendar AS (
    SELECT CAST(unnest(generate_series(min(ds), max(ds), INTERVAL 1 DAY)) AS DATE) AS ds
    FROM daily
),
artists AS (
    SELECT DISTINCT artist_id FROM daily
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
LEFT JOIN daily ON daily.artist_id = artists.artist_id AND daily.ds = calendar.ds
ORDER BY artists.artist_id, calendar.ds
