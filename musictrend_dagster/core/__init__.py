"""The pure-Python core: data contracts, sample data, metric, models. No Dagster imports here."""
