"""Dagster definitions: thin assets, checks and resources over the galpipe library."""
