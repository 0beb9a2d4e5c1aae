"""Thin Dagster layer: one module per stage. Each asset reads inputs, calls one `lib` function, writes, and
returns metadata."""
