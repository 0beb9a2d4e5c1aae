"""Dagster resources: where artifacts live, and the models (encoder, teacher, generator)."""

from .encoder import EncoderResource
from .generator import GeneratorResource
from .storage import StorageResource
from .teacher import TeacherResource

__all__ = ["EncoderResource", "GeneratorResource", "StorageResource", "TeacherResource"]
