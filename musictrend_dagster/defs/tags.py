"""Run tags that say in the Dagster UI which path a run took and why (set by the automation sensor, the
replay and the CLI; read back by the assets into their metadata)."""

PATH_TAG = "musictrend/path"  # "daily" (forecast from the registered champion) or "retrain" (the whole graph)
TRIGGER_TAG = "musictrend/trigger"  # automation, cli, replay
REASON_TAG = "musictrend/reason"  # why: the retrain reasons, "requested: musictrend run --retrain", ...
