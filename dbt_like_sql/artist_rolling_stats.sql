-- Trailing statistics of daily plays per artist, for day d over days ending at d (never
-- a future day). plays_mean_3 / plays_var_3 cover d-2..d as in the original LSTM design;
-- the variance is the POPULATION variance (divide by the number of days). Medians are
-- the mean of the two middle values for an even count. Windows are calendar ranges, and in
-- the first days of the log they hold only the days available (like pandas
-- rolling(min_periods=1)); window_days_28 says how many.
-- Written as a join of each day with its artist's days d-27..d and a GROUP BY (the FILTERs
-- cut the shorter windows), not as window functions: Spark refuses median, like every
-- percentile, over a window frame, and this file runs on both engines.
SELECT
    d.artist_id,
    d.ds,
    d.plays,
    count(*) AS window_days_28,
    avg(w.plays) FILTER (WHERE date_diff('day', w.ds, d.ds) <= 2) AS plays_mean_3,
    var_pop(w.plays) FILTER (WHERE date_diff('day', w.ds, d.ds) <= 2) AS plays_var_3,
    median(w.plays) FILTER (WHERE date_diff('day', w.ds, d.ds) <= 6) AS plays_median_7,
    median(w.plays) FILTER (WHERE date_diff('day', w.ds, d.ds) <= 13) AS plays_median_14,
    median(w.plays) AS plays_median_28
FROM artist_daily AS d
JOIN artist_daily AS w
    ON w.artist_id = d.artist_id AND w.ds <= d.ds AND date_diff('day', w.ds, d.ds) <= 27
GROUP BY d.artist_id, d.ds, d.plays
ORDER BY d.artist_id, d.ds
