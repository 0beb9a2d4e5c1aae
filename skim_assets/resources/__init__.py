"""Dagster resources: where artifacts live (storage and the IO manager), and the models (encoder, teacher,
generator)."""

from .artifacts import ArtifactIOManager, Tables, TrainingView, storage_resources
from .encoder import EncoderResource
from .generator import GeneratorResource
from .storage import StorageResource
from .teacher import TeacherResource

__all__ = ["ArtifactIOManager", "EncoderResource", "GeneratorResource", "StorageResource", "Tables", "TeacherResource",
           "TrainingView", "storage_resources"]
