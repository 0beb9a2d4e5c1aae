"""SKIM (Scalable Knowledge Infusion for Missing labels) as a Dagster code location."""
