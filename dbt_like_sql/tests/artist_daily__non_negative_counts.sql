-- Rows with a negative or missing count.
SELECT *
FROM artist_daily
WHERE coalesce(plays, -1) < 0
   OR coalesce(downloads, -1) < 0
   OR coalesce(collects, -1) < 0
   OR coalesce(listeners, -1) < 0
   OR coalesce(active_songs, -1) < 0
