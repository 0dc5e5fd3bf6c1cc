"""Thin Dagster layer over `musictrend_dagster.core`: assets by role, resources, checks, automation."""
