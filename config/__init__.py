"""Configuration: :class:`Settings` (environment, ``DELAYWATCH_`` prefix) and the rule
:class:`Thresholds` (one YAML file, per carrier and service level)."""

from delaywatch.config.settings import (
    KafkaSettings,
    KpiTargets,
    ModelSettings,
    ReportSettings,
    Settings,
    TimeSettings,
    TopicSettings,
    WorkerSettings,
)
from delaywatch.config.thresholds import (
    DEFAULT_THRESHOLDS_FILE,
    LaneThresholds,
    StockThresholds,
    Thresholds,
    load_thresholds,
)

__all__ = [
    "DEFAULT_THRESHOLDS_FILE",
    "KafkaSettings",
    "KpiTargets",
    "LaneThresholds",
    "ModelSettings",
    "ReportSettings",
    "Settings",
    "StockThresholds",
    "Thresholds",
    "TimeSettings",
    "TopicSettings",
    "WorkerSettings",
    "load_thresholds",
]
