-- One row per song. raw_songs keeps every loaded line; a song listed twice (same
-- artist: conflicting artists are quarantined on load) must not double its plays.
SELECT
    song_id,
    min(artist_id) AS artist_id,
    min(publish_time) AS publish_time,
    max(song_init_plays) AS song_init_plays,
    min(language) AS language,
    min(gender) AS gender
FROM raw_songs
GROUP BY song_id
