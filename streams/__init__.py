"""The Faust layer: a thin shell around :mod:`delaywatch.core`.

``app`` builds the App; ``topics`` and ``tables`` declare what it reads, writes and keeps;
``agents`` decode, look up the partition's engine, call the core, write state back, send.
``worker`` runs it. Nothing here decides anything: every decision is in the core.
"""

from delaywatch.streams.app import create_app
from delaywatch.streams.worker import build_worker, run_worker

__all__ = ["build_worker", "create_app", "run_worker"]
