"""Configuration: :class:`Settings` (environment, ``DELAYWATCH_`` prefix) and the rule
:class:`Thresholds` (one YAML file, per carrier and service level)."""

from delaywatch.config.settings import (
    EscalatorSettings,
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
    EscalationThresholds,
    LaneThresholds,
    StockThresholds,
    SystemThresholds,
    Thresholds,
    load_thresholds,
)

__all__ = [
    "DEFAULT_THRESHOLDS_FILE",
    "EscalationThresholds",
    "EscalatorSettings",
    "KafkaSettings",
    "KpiTargets",
    "LaneThresholds",
    "ModelSettings",
    "ReportSettings",
    "Settings",
    "StockThresholds",
    "SystemThresholds",
    "Thresholds",
    "TimeSettings",
    "TopicSettings",
    "WorkerSettings",
    "load_thresholds",
]
