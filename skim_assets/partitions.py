"""Partitions: one dynamic partition per dataset, added by `skim import` or the dataset sensor."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="dataset")
