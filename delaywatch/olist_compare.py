"""The online delay-risk model against batch baselines on the real Olist orders, at placement.

``compare_olist(csv_path)`` answers issue #4's question "is the river model any good on real
data?" in one run:

1. :func:`delaywatch.olist.import_olist` turns the extract into wire-contract records and truth.
2. The records go through :func:`delaywatch.replay.replay` - the same core as the worker - with
   the models on and ``keep_features`` set on every partition's :class:`RiskDetector`, so each
   :class:`Prediction` carries the exact feature dict the online model scored.
3. Per order, the first scoring (trigger ``placed``, at the purchase time) gives
   ``p_late_online`` and the placement features ``x``.
4. Orders with a known outcome (delivered: ``late`` True/False; cancelled and still-undelivered
   orders are left out) are split by purchase time: the first ``1 - test_share`` train, the
   last ``test_share`` test.
5. Batch baselines are fitted on the train orders' placement vectors only and scored on the
   test orders: scikit-learn ``HistGradientBoostingClassifier`` and a ``LogisticRegression`` on
   standardised numbers plus the one-hot indicators (the batch twin of the online model).
6. ROC-AUC, PR-AUC (average precision) and Brier score of all three on the same test orders.

One partition by default. With ``n`` partitions a per-partition learner sees only ~1/n of the
3,467 labelled orders, and a learner shared by the partitions gets them in an order that
depends on the sharding. With one partition the online model learns every outcome in event-time
order, from the same orders the batch model gets, so the comparison measures the learner, not
the sharding.

Time zone. The hour and weekday features are read in the shop's time zone
(``thresholds.timezone``, Asia/Seoul by default). Olist is a São Paulo shop, so the run uses
``America/Sao_Paulo``: otherwise a 14:00 order would count as the next weekday.

Fairness, stated rather than fixed. The online model scores each test order with what it had
learned from outcomes known BEFORE that order was placed (delivered, or promise passed: as it
runs live, a label arrives days or weeks after the order), and it keeps learning during the
test period. The batch models
see every train label, including those of orders delivered after the last train order was
placed, but nothing of the test period. ``online.outcomes_known_at_placement`` reports how
many labels the stream had when it scored the test orders.

Leakage. The importer never reads the ``review_*``, ``votes_*`` and ``most_voted_*`` columns;
the features are what :func:`delaywatch.models.features.order_features` built at placement.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import Thresholds, load_thresholds
from delaywatch.core.pipeline import Topology
from delaywatch.models.risk import MODEL_NAME, MODEL_VERSION, RiskDetector
from delaywatch.olist import SAO_PAULO, import_olist
from delaywatch.replay import replay

__all__ = [
    "POST_DELIVERY_MARKERS",
    "batch_models",
    "compare",
    "compare_olist",
    "placement_frame",
    "split_by_purchase",
]

# Substrings of the post-delivery CSV columns: no feature name may contain one.
POST_DELIVERY_MARKERS = ("review", "vote")
PLACED = "placed"


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(SAO_PAULO).isoformat(timespec="seconds")


def placement_frame(
    csv_path: str | Path, partitions: int = 1, timezone: str = SAO_PAULO.key,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Replay the Olist extract with the models on; one row per order with a known outcome.

    Columns: ``order_id``, ``purchase_at`` (epoch s), ``late`` (bool), ``p_late_online`` and
    ``x`` (the online model's first scoring of the order, at placement), ``known_before``
    (outcomes the stream knew when it scored the order: orders delivered, or whose promise
    passed undelivered, before the purchase time). The dict holds counts and the model version.
    """
    records, truth = import_olist(csv_path)
    settings = Settings()
    settings.models.enabled = True
    settings.topics.partitions = partitions
    if getattr(settings.models, "checkpoint_path", None) is not None:
        # from zero: a warm-start checkpoint (DELAYWATCH_MODELS__CHECKPOINT_PATH) may have
        # been trained on this very file, test labels included
        settings.models.checkpoint_path = None
    base = load_thresholds(settings.thresholds_file)
    thresholds = Thresholds.model_validate({**base.model_dump(), "timezone": timezone})
    detectors: list[RiskDetector] = []

    def keep_features(topo: Topology) -> None:
        for part in topo.shipments:
            risk = part.logic.risk
            assert risk is not None  # settings.models.enabled
            risk.keep_features = True
            if not any(risk is d for d in detectors):  # partitions may share one detector
                detectors.append(risk)

    result = replay(records, settings, thresholds, flush=True, configure=keep_features)
    # replay output: Predictions in event-time order per partition -> the first per order
    first: dict[str, Any] = {}
    for p in result.predictions:
        first.setdefault(p.order_id, p)

    # when the stream knew each outcome: the delivery, or the promise passing undelivered
    learned_at = sorted(
        min(t for t in (_epoch(o["delivered_at"]), _epoch(o["promised_at"])) if t is not None)
        for o in truth if not o["cancelled"])
    rows, not_at_placement = [], 0
    for o in truth:
        if not o["outcome_known"] or o["cancelled"]:
            continue
        purchase = _epoch(o["purchase_at"])
        pred = first.get(o["order_id"])
        assert purchase is not None
        if pred is None or pred.trigger != PLACED or abs(pred.scored_at - purchase) > 1e-3:
            not_at_placement += 1
            continue
        rows.append({
            "order_id": o["order_id"], "purchase_at": purchase, "late": bool(o["late"]),
            "p_late_online": pred.p_late, "x": pred.x,
            "known_before": bisect.bisect_left(learned_at, purchase),
        })
    frame = pd.DataFrame(rows, columns=["order_id", "purchase_at", "late", "p_late_online",
                                        "x", "known_before"])
    meta = {
        "orders": len(truth),
        "labelled": len(frame),
        "excluded": {
            "cancelled": sum(1 for o in truth if o["cancelled"]),
            "unknown_outcome": sum(1 for o in truth if not o["outcome_known"]),
            "not_scored_at_placement": not_at_placement,
        },
        "online": {
            "model": f"{MODEL_NAME} v{MODEL_VERSION}",
            "estimator": _describe(detectors[0]),
            "partitions": partitions,
            "timezone": timezone,
            "learned_scorings_at_end": sum(d.model.n_learned for d in detectors),
            "replay_seconds": round(result.seconds, 1),
        },
    }
    return frame, meta


def _describe(risk: RiskDetector) -> dict[str, Any]:
    """The online model as run: class, constructor arguments (river's contract stores them
    under the same names) and a hash of the model and feature code, since MODEL_VERSION is
    only bumped by hand."""
    from delaywatch.models import features
    from delaywatch.models import risk as risk_module

    model = risk.model
    params = {name: getattr(model, name) for name in inspect.signature(type(model)).parameters
              if hasattr(model, name)}
    code = "".join(inspect.getsource(m) for m in (risk_module, features)).encode()
    return {"class": type(model).__name__, "params": params,
            "code_sha256": hashlib.sha256(code).hexdigest()[:12]}


def split_by_purchase(
    frame: pd.DataFrame, test_share: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """First ``1 - test_share`` of the orders by purchase time (ties by order id), then the rest."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    ordered = frame.sort_values(["purchase_at", "order_id"], kind="stable")
    n_test = math.ceil(len(ordered) * test_share)
    cut = len(ordered) - n_test
    return ordered.iloc[:cut], ordered.iloc[cut:]


def batch_models(seed: int = 0) -> dict[str, Any]:
    """Unfitted scikit-learn pipelines from a list of feature dicts to p(late).

    Missing keys are 0 (an absent one-hot); names and columns come from the train dicts only.
    """
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def vec() -> Any:
        return DictVectorizer(sparse=False).set_output(transform="pandas")

    # one-hots are named "name=value" and pass unchanged, like the online OnlineScaler
    numbers = make_column_selector(pattern=r"^[^=]+$")
    return {
        "batch_hgb": Pipeline([
            ("vec", vec()),
            ("hgb", HistGradientBoostingClassifier(random_state=seed)),
        ]),
        "batch_logreg": Pipeline([
            ("vec", vec()),
            ("scale", ColumnTransformer([("num", StandardScaler(), numbers)],
                                        remainder="passthrough")),
            ("lr", LogisticRegression(C=1.0, max_iter=5000, random_state=seed)),
        ]),
    }


def _scores(y: pd.Series, p: Any) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
    }


def paired_auc_difference(y: pd.Series, a: Any, b: Any, n: int = 2000, seed: int = 0
                          ) -> dict[str, Any]:
    """ROC-AUC of ``a`` minus that of ``b`` on the same orders, with a 95 % interval from a
    paired bootstrap (the same resampled orders for both)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    yv, av, bv = np.asarray(y, dtype=bool), np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(yv), len(yv))
        if yv[i].all() or not yv[i].any():
            continue
        diffs.append(roc_auc_score(yv[i], av[i]) - roc_auc_score(yv[i], bv[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": round(float(roc_auc_score(yv, av) - roc_auc_score(yv, bv)), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def compare(
    frame: pd.DataFrame, meta: dict[str, Any] | None = None, test_share: float = 0.3,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the online scores and the batch baselines on the last ``test_share``."""
    train, test = split_by_purchase(frame, test_share)
    y_train, y_test = train["late"].astype(bool), test["late"].astype(bool)
    if y_train.nunique() < 2 or y_test.nunique() < 2:
        raise ValueError("train and test need both late and on-time orders")
    from threadpoolctl import threadpool_limits

    metrics = {"online": _scores(y_test, test["p_late_online"])}
    fitted: dict[str, int] = {}
    scores: dict[str, Any] = {}
    # one OpenMP thread: on a busy 2-core box HGB's threads oversubscribe (113 s vs 8 s)
    with threadpool_limits(1):
        for name, model in batch_models(seed).items():
            model.fit(list(train["x"]), y_train)  # the train orders only
            fitted[name] = len(model.named_steps["vec"].feature_names_)
            p = model.predict_proba(list(test["x"]))[:, 1]
            metrics[name] = _scores(y_test, p)
            scores[name] = p
    known = [int(k) for k in test["known_before"]]
    out: dict[str, Any] = dict(meta or {})
    out["split"] = {
        "by": "purchase_at",
        "test_share": test_share,
        "train_orders": len(train),
        "test_orders": len(test),
        "train_purchase": [_iso(train["purchase_at"].min()), _iso(train["purchase_at"].max())],
        "test_purchase": [_iso(test["purchase_at"].min()), _iso(test["purchase_at"].max())],
        "train_late": int(y_train.sum()),
        "test_late": int(y_test.sum()),
        "train_base_rate": round(float(y_train.mean()), 4),
        "test_base_rate": round(float(y_test.mean()), 4),
    }
    online = out.setdefault("online", {})
    online["outcomes_known_at_placement"] = {
        "test_min": min(known), "test_median": statistics.median(known), "test_max": max(known),
    }
    out["batch"] = {
        "fit_orders": len(train),
        "features": fitted,
        "seed": seed,
        "labels_seen": "every train order's outcome; nothing of the test period",
    }
    out["metrics"] = metrics
    # "matches or beats" needs the noise: ~1,000 test orders, ~150 of them late
    out["online_minus_batch_roc_auc"] = {
        name: paired_auc_difference(y_test, test["p_late_online"], p, seed=seed)
        for name, p in scores.items()}
    out["note"] = ("online: each test order scored at placement with only the outcomes "
                   "delivered before it (as live); batch: fitted once on all train labels")
    return out


def compare_olist(
    csv_path: str | Path, test_share: float = 0.3, partitions: int = 1, seed: int = 0,
) -> dict[str, Any]:
    """Import, replay with models on, and compare online vs batch at placement; a JSON dict."""
    frame, meta = placement_frame(csv_path, partitions=partitions)
    out = compare(frame, meta, test_share=test_share, seed=seed)
    out["csv"] = Path(csv_path).name
    return out
