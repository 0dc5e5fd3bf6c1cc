-- materialized: view
-- The lake's action rows under stable names. A view: copying every row into a table would
-- double the ingest cost for no gain (every row was validated on load).
SELECT user_id, song_id, gmt_create, action_type, ds
FROM raw_user_actions
