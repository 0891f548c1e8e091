"""Run the worker: App + topics + tables + agents, started by Faust's Worker."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import load_thresholds
from delaywatch.streams.agents import Agents, define_agents
from delaywatch.streams.app import create_app
from delaywatch.streams.tables import Tables, define_tables
from delaywatch.streams.topics import Topics, define_topics

__all__ = ["Wiring", "build_worker", "run_worker"]


@dataclass
class Wiring:
    app: faust.App
    topics: Topics
    tables: Tables
    agents: Agents


def build_worker(settings: Settings) -> Wiring:
    app = create_app(settings)
    topics = define_topics(app, settings)
    tables = define_tables(app, settings)
    agents = define_agents(app, settings, load_thresholds(settings.thresholds_file), topics,
                           tables)
    return Wiring(app, topics, tables, agents)


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    """Block running a worker until SIGTERM/SIGINT."""
    wiring = build_worker(settings)
    worker = faust.Worker(wiring.app, loglevel=loglevel, quiet=True,
                          override_logging=False)
    worker.execute_from_commandline()
