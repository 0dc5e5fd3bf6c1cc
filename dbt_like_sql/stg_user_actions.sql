-- materialized: view
-- The loaded action log under stable names. A view: copying 5.6M+ rows into a second
-- table would double the ingest cost for no gain (every row was validated on load).
SELECT user_id, song_id, gmt_create, action_type, ds
FROM raw_user_actions
