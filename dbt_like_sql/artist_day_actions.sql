-- materialized: incremental
-- partition_by: ds
-- unique_key: artist_id, ds
-- Plays, downloads, collects, distinct listeners and active songs per artist and day, for
-- the days on which the artist had any action (sparse: artist_daily adds the zero days).
-- A day's row depends on that day's actions only, so a daily drop re-aggregates just the
-- days the lake changed on (incremental_filter); the songs changing rebuilds it all.
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
WHERE incremental_filter(a.ds)
GROUP BY s.artist_id, a.ds
