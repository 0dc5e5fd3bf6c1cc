-- materialized: view
-- A described daily source's counts per series and day (a series is an artist, or a song
-- that the catalogue maps to its artist, or a song forecast on its own).
SELECT series_id, ds, plays, source_file
FROM raw_daily_plays
