"""The examples in the models' docstrings run (seeded, so they are stable)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["delaywatch.models.risk", "delaywatch.models.checkpoint",
                                    "delaywatch.models.stock_risk", "delaywatch.models.causes",
                                    "delaywatch.models.messages",
                                    "delaywatch.models.audience"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
