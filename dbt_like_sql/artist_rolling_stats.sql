-- Trailing statistics of daily plays per artist, for day d over days ending at d (never
-- a future day). plays_mean_3 / plays_var_3 cover d-2..d as in the original LSTM design;
-- the variance is the POPULATION variance (divide by the number of days). Medians are
-- quantile_cont(0.5): the mean of the two middle values for an even count. Windows are
-- calendar ranges (RANGE ... INTERVAL), and in the first days of the log they hold only
-- the days available (like pandas rolling(min_periods=1)); window_days says how many.
SELECT
    artist_id,
    ds,
    plays,
    count(*) OVER w28 AS window_days_28,
    avg(plays) OVER w3 AS plays_mean_3,
    var_pop(plays) OVER w3 AS plays_var_3,
    median(plays) OVER w7 AS plays_median_7,
    median(plays) OVER w14 AS plays_median_14,
    median(plays) OVER w28 AS plays_median_28
FROM artist_daily
WINDOW
    w3 AS (PARTITION BY artist_id ORDER BY ds RANGE BETWEEN INTERVAL 2 DAY PRECEDING AND CURRENT ROW),
    w7 AS (PARTITION BY artist_id ORDER BY ds RANGE BETWEEN INTERVAL 6 DAY PRECEDING AND CURRENT ROW),
    w14 AS (PARTITION BY artist_id ORDER BY ds RANGE BETWEEN INTERVAL 13 DAY PRECEDING AND CURRENT ROW),
    w28 AS (PARTITION BY artist_id ORDER BY ds RANGE BETWEEN INTERVAL 27 DAY PRECEDING AND CURRENT ROW)
ORDER BY artist_id, ds
