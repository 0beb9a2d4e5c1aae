"""The science of SKIM, free of Dagster: plain functions over polars frames and numpy arrays."""
