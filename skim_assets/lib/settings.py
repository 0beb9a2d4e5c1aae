"""The base of every settings object `lib` receives.

Fields, defaults and descriptions are written once, here in `lib`. An asset's Dagster config subclasses the
settings class together with `dg.Config` (`class RetrieverTrainingConfig(dg.Config, DualEncoderConfig)`), so the
config the UI shows *is* the settings object the science receives: no second list of the same fields.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def of(cls: type[S], settings: Settings) -> S:
        """This class's fields of `settings`, which may be a Dagster config carrying more (e.g. a sweep's list)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})

    def with_(self: S, **changes) -> S:
        """A copy of this class's settings with `changes`, validated."""
        return self._settings_class()(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        """This settings class's own fields (a Dagster config's extra fields left out), JSON-ready."""
        return {name: getattr(self, name) for name in self._settings_class().model_fields}

    @classmethod
    def _settings_class(cls) -> type[Settings]:
        """The `lib` settings class in this class's bases (itself, or what a Dagster config subclasses)."""
        return next(c for c in cls.__mro__ if Settings in c.__bases__)
