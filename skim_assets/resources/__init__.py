"""Dagster resources: where artifacts live and which encoder to use."""

from .encoder import EncoderResource
from .storage import StorageResource

__all__ = ["EncoderResource", "StorageResource"]
