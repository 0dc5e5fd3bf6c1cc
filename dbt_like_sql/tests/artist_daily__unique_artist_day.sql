-- (artist_id, ds) pairs that appear more than once.
SELECT artist_id, ds, count(*) AS n
FROM artist_daily
GROUP BY artist_id, ds
HAVING count(*) > 1
