-- materialized: view
-- A described daily source's counts per series and day (a series is an artist, or a song
-- that the catalogue maps to its artist, or a song forecast on its own). artist_id is the
-- series when the series are artists, else NULL (the catalogue says). downloads, collects
-- and listeners are 0 where the source names no such column.
SELECT series_id, artist_id, ds, plays, downloads, collects, listeners, source_file
FROM raw_daily_plays
