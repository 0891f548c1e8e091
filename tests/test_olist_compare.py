"""Online vs batch at placement on the real Olist extract: split, leakage, fit-on-train only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from delaywatch import olist_compare
from delaywatch.cli import app
from delaywatch.olist import import_olist
from delaywatch.olist_compare import (
    POST_DELIVERY_MARKERS,
    batch_models,
    compare,
    placement_frame,
    split_by_purchase,
)

CSV_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared/data/olist_classified/olist_classified_public_dataset.csv"
)

pytestmark = pytest.mark.skipif(not CSV_PATH.exists(), reason=f"{CSV_PATH} not present")


@pytest.fixture(scope="module")
def placed() -> tuple[pd.DataFrame, dict[str, Any]]:
    return placement_frame(CSV_PATH)  # one replay (~13 s), shared by every test here


class _Spy:
    """A batch pipeline that records which feature dicts it was fitted on and scored."""

    def __init__(self, name: str, model: Any, calls: dict[tuple[str, str], Any]) -> None:
        self.model, self.calls, self.name = model, calls, name
        self.named_steps = model.named_steps

    def fit(self, xs: list[dict[str, float]], y: Any) -> _Spy:
        self.calls[self.name, "fit"] = ([id(x) for x in xs], len(y))
        self.model.fit(xs, y)
        return self

    def predict_proba(self, xs: list[dict[str, float]]) -> Any:
        self.calls[self.name, "predict"] = [id(x) for x in xs]
        return self.model.predict_proba(xs)


@pytest.fixture(scope="module")
def spied(placed: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    frame, meta = placed
    calls: dict[tuple[str, str], Any] = {}

    def spying(seed: int = 0) -> dict[str, Any]:
        return {k: _Spy(k, m, calls) for k, m in batch_models(seed).items()}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(olist_compare, "batch_models", spying)
        return compare(frame, meta, test_share=0.3, seed=0), calls


@pytest.fixture(scope="module")
def result(spied: Any) -> dict[str, Any]:
    return spied[0]


def test_placement_rows_are_the_labelled_orders(placed: Any) -> None:
    frame, meta = placed
    _, truth = import_olist(CSV_PATH)
    labelled = {t["order_id"] for t in truth if t["outcome_known"] and not t["cancelled"]}
    assert set(frame["order_id"]) == labelled and len(frame) == 3467 == meta["labelled"]
    assert frame["late"].sum() == 339
    assert meta["excluded"] == {"cancelled": 25, "unknown_outcome": 92,
                                "not_scored_at_placement": 0}
    assert meta["online"]["partitions"] == 1
    assert frame["p_late_online"].between(0, 1).all()


def test_no_feature_from_post_delivery_columns(placed: Any) -> None:
    frame, _ = placed
    names = {k for x in frame["x"] for k in x}
    assert names, "keep_features must put the vectors on the predictions"
    assert not [n for n in names if any(m in n.lower() for m in POST_DELIVERY_MARKERS)]
    # placement vectors: nothing has happened to the order yet
    assert all(x["h_since_order"] == 0 and x["scans"] == 0 for x in frame["x"])
    assert "delivered" not in names


def test_test_set_is_the_last_30_percent_by_purchase_time(placed: Any, result: Any) -> None:
    frame, _ = placed
    train, test = split_by_purchase(frame, 0.3)
    assert len(test) == math.ceil(0.3 * len(frame)) == result["split"]["test_orders"]
    assert len(train) + len(test) == len(frame) == 3467
    assert not set(train["order_id"]) & set(test["order_id"])
    assert train["purchase_at"].max() <= test["purchase_at"].min()
    latest = frame.nlargest(len(test), "purchase_at")
    assert set(latest["order_id"]) == set(test["order_id"])


def test_result_structure_and_sanity(result: Any) -> None:
    assert set(result["metrics"]) == {"online", "batch_hgb", "batch_logreg"}
    for m in result["metrics"].values():
        assert 0 <= m["roc_auc"] <= 1 and 0 <= m["pr_auc"] <= 1 and 0 <= m["brier"] <= 1
    split = result["split"]
    assert split["train_purchase"][1] <= split["test_purchase"][0]
    assert split["test_late"] + split["train_late"] == 339
    assert math.isclose(split["test_base_rate"], split["test_late"] / split["test_orders"],
                        abs_tol=1e-4)
    assert result["batch"]["fit_orders"] == split["train_orders"]
    assert result["online"]["model"].startswith("delay-risk-lr v")
    # the online model scores with outcomes known before placement only
    known = result["online"]["outcomes_known_at_placement"]
    assert known["test_min"] <= known["test_median"] <= known["test_max"] < 3584
    # the comparison says how sure it is: a paired bootstrap interval around each difference
    for name, d in result["online_minus_batch_roc_auc"].items():
        gap = result["metrics"]["online"]["roc_auc"] - result["metrics"][name]["roc_auc"]
        assert abs(d["diff"] - gap) <= 2e-4 and d["ci95"][0] <= d["diff"] <= d["ci95"][1]


def test_batch_is_fitted_on_train_only_and_scored_on_test(placed: Any, spied: Any) -> None:
    frame, _ = placed
    _, calls = spied
    train, test = split_by_purchase(frame, 0.3)
    for name in ("batch_hgb", "batch_logreg"):
        fitted_on, n_labels = calls[name, "fit"]
        assert fitted_on == [id(x) for x in train["x"]] and n_labels == len(train)
        assert calls[name, "predict"] == [id(x) for x in test["x"]]


def test_cli_eval_olist_is_registered() -> None:
    r = CliRunner().invoke(app, ["eval", "olist", "--help"])
    assert r.exit_code == 0 and "--out" in r.output
