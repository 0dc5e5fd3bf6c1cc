-- materialized: view
-- The lake's action rows under stable names: the competition's log (no artist column: the
-- songs say) and a described source's event log (artist_id from the log, or NULL when its
-- catalogue says). A view: copying every row into a table would double the ingest cost for
-- no gain (every row was validated on load).
SELECT user_id, song_id, CAST(NULL AS VARCHAR) AS artist_id, gmt_create, action_type, ds
FROM raw_user_actions
UNION ALL
SELECT user_id, song_id, artist_id, gmt_create, action_type, ds
FROM raw_events
