"""delaywatch: stream-processing delay and stock-mismatch detection for e-commerce logistics.

Sub-packages: ``delaywatch.schemas`` (wire contract), ``delaywatch.config`` (settings and
thresholds), ``delaywatch.core`` (the pure, event-time engine shared by the Faust worker, replay
and tests), ``delaywatch.models`` (detectors), ``delaywatch.streams`` (the Faust layer).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
