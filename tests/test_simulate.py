"""The event simulator: determinism, wire-contract validity, incident rates, no PII in truth."""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from datetime import datetime

import orjson
import pytest
from pydantic import ValidationError

from delaywatch import schemas
from delaywatch.simulate import simulate, write_jsonl

MODELS = {
    "orders": schemas.OrderEvent,
    "inventory": schemas.InventoryEvent,
    "carrier-scans": schemas.ScanEvent,
}


@pytest.fixture(scope="module")
def small() -> tuple[list[dict], list[dict]]:
    return simulate(1500, seed=3, profile="stress")


@pytest.fixture(scope="module")
def big() -> tuple[list[dict], list[dict]]:
    return simulate(5000, seed=7, profile="stress")


def _orders(truth: list[dict]) -> list[dict]:
    return [t for t in truth if t["type"] == "order"]


def test_deterministic_per_seed() -> None:
    a = simulate(400, seed=11)
    b = simulate(400, seed=11)
    c = simulate(400, seed=12)
    assert orjson.dumps(a) == orjson.dumps(b)
    assert orjson.dumps(a[0]) != orjson.dumps(c[0])
    assert orjson.dumps(a[1]) != orjson.dumps(c[1])


def test_records_validate_and_keys_match(small) -> None:
    records, _ = small
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    checked = Counter()
    for rec in records:
        assert isinstance(rec["ts"], int)
        payloads = [k for k in ("value", "raw", "raw_b64") if k in rec]
        assert len(payloads) == 1
        if "malformed" in rec:
            continue
        model = MODELS[rec["topic"]]
        event = model.model_validate_json(orjson.dumps(rec["value"]))
        if rec["topic"] == "inventory":
            assert rec["key"] == event.stock_key
        else:
            assert rec["key"] == event.order_id
        # Every timestamp on the wire carries an offset.
        assert rec["value"]["occurred_at"].endswith("+09:00")
        checked[rec["topic"]] += 1
    assert set(checked) == set(MODELS)


def test_malformed_records_are_really_malformed(small) -> None:
    records, truth = small
    bad = [r for r in records if "malformed" in r]
    assert truth[0]["malformed"] == len(bad) > 0
    for rec in bad:
        kind = rec["malformed"]
        if kind == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(rec["raw"])
        elif kind == "undecodable":
            with pytest.raises(UnicodeDecodeError):
                base64.b64decode(rec["raw_b64"]).decode("utf-8")
        elif kind == "future_timestamp":
            model = MODELS[rec["topic"]]
            occurred = model.model_validate_json(orjson.dumps(rec["value"])).occurred_at
            assert occurred.year == 2099
        else:
            with pytest.raises(ValidationError):
                MODELS[rec["topic"]].model_validate_json(orjson.dumps(rec["value"]))


def test_duplicates_share_id_and_content(small) -> None:
    records, _ = small
    by_id: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        if "malformed" not in rec:
            by_id[rec["value"]["event_id"]].append(rec["value"])
    dups = [vals for vals in by_id.values() if len(vals) > 1]
    assert dups, "noise should duplicate ~1% of events"
    for vals in dups:
        assert all(v == vals[0] for v in vals)


def test_every_order_placed_carries_pii_and_no_pii_in_truth(small) -> None:
    records, truth = small
    truth_text = orjson.dumps(truth).decode()
    placed = 0
    for rec in records:
        value = rec.get("value")
        if rec["topic"] != "orders" or "malformed" in rec or value["event_type"] != "order_placed":
            continue
        placed += 1
        customer = value["customer"]
        assert customer["name"] and customer["phone"].startswith("010-") and customer["address"]
        for field in ("name", "phone", "address"):
            assert customer[field] not in truth_text
    assert placed >= 1500


def test_truth_shape(small) -> None:
    records, truth = small
    meta = truth[0]
    assert meta["type"] == "meta" and meta["orders"] == 1500 and meta["events"] == len(records)
    orders = _orders(truth)
    assert len(orders) == 1500
    assert len({o["order_id"] for o in orders}) == 1500
    for o in orders:
        promised = datetime.fromisoformat(o["promised_at"])
        if o["cancelled"]:
            assert not o["late"]
            continue
        delivered = datetime.fromisoformat(o["delivered_at"])
        assert o["late"] == (delivered > promised)
        for inc in o["incidents"]:
            assert (inc["detectable_at"] is None) == (inc["kind"] == "transit_slow")


def test_noise_off_gives_only_clean_records() -> None:
    records, truth = simulate(300, seed=5, noise=False, profile="stress")
    assert truth[0]["malformed"] == 0
    ids = [r["value"]["event_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert not any("malformed" in r for r in records)


def test_rates_on_5000_orders(big) -> None:
    _, truth = big
    orders = _orders(truth)
    n = len(orders)
    late = sum(o["late"] for o in orders) / n
    # random incidents (~6 %) plus the learnable causes (slow lanes, congestion on the
    # promotion day, cut-off rush), measured 19.9 % for seed 7
    assert 0.12 <= late <= 0.26
    assert 0.004 <= sum(o["cancelled"] for o in orders) / n <= 0.02
    kinds = Counter(i["kind"] for o in orders for i in o["incidents"])
    ranges = {
        "waybill_missing": (0.005, 0.025),
        "handover_missed": (0.02, 0.07),  # incidents + cut-off rush
        "tracking_stale": (0.008, 0.035),
        "carrier_exception": (0.002, 0.02),
        "stock_shortage": (0.0005, 0.03),
        "transit_slow": (0.08, 0.2),  # slow lanes + promotion congestion
    }
    for kind, (lo, hi) in ranges.items():
        assert lo <= kinds[kind] / n <= hi, (kind, kinds[kind])
    # Orders without any incident are never late.
    assert not [o for o in orders if o["late"] and not o["incidents"]]
    stock = Counter(i["kind"] for t in truth if t["type"] == "stock" for i in t["incidents"])
    assert stock["stock_mismatch"] >= 3
    assert stock["oversell"] >= 1
    assert stock["negative_stock"] >= 1


def test_write_jsonl_roundtrip(tmp_path) -> None:
    records, _ = simulate(50, seed=1)
    path = tmp_path / "events.jsonl"
    write_jsonl(path, records)
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(records)
    assert [orjson.loads(line) for line in lines] == records


# -- scenarios (issue #8) -------------------------------------------------------------------
def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _scans_by_order(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, dict[str, dict]] = defaultdict(dict)  # duplicates (noise) counted once
    for r in records:
        if r["topic"] == "carrier-scans" and "value" in r and "malformed" not in r:
            out[r["key"]][r["value"]["event_id"]] = r
    return {k: list(v.values()) for k, v in out.items()}


@pytest.fixture(scope="module")
def scenario_worlds(big) -> dict[str, tuple[list[dict], list[dict]]]:
    from delaywatch.simulate import SCENARIOS

    return {name: simulate(5000, seed=7, scenario=name, profile="stress") for name in SCENARIOS}


@pytest.mark.parametrize("name", ["carrier_outage", "hub_congestion", "integration_failure"])
def test_a_scenario_labels_what_it_did_and_leaves_every_other_order_alone(
        name, big, scenario_worlds) -> None:
    records, truth = scenario_worlds[name]
    meta = truth[0]["scenario"]
    assert meta["name"] == name and _ts(meta["start"]) < _ts(meta["end"])
    hit = [o for o in _orders(truth) if any(i["kind"] == name for i in o["incidents"])]
    assert meta["affected_orders"] == len(hit) > 50
    base = {o["order_id"]: o for o in _orders(big[1])}
    others = [o for o in _orders(truth) if o not in hit]
    assert all(base[o["order_id"]] == o for o in others)  # the same world around it
    assert len(records) == len(big[0])


def test_carrier_outage_holds_back_the_carriers_scans_until_the_feed_returns(
        scenario_worlds) -> None:
    records, truth = scenario_worlds["carrier_outage"]
    meta = truth[0]["scenario"]
    lo, hi = _ts(meta["start"]) * 1000, _ts(meta["end"]) * 1000
    during = [r for r in records if r["topic"] == "carrier-scans" and "value" in r
              and "malformed" not in r and lo <= _ts(r["value"]["occurred_at"]) * 1000 < hi]
    cj = [r for r in during if r["value"]["carrier"] == "CJ"]
    assert cj and all(r["ts"] >= hi for r in cj)  # buffered, re-sent after the outage
    other = [r for r in during if r["value"]["carrier"] != "CJ"]
    assert other and sum(r["ts"] < hi for r in other) > 0.9 * len(other)


def test_hub_congestion_holds_parcels_a_day_at_the_hub(big, scenario_worlds) -> None:
    from delaywatch.simulate import CONGESTED_HUB

    records, truth = scenario_worlds["hub_congestion"]
    base = {o["order_id"]: o for o in _orders(big[1])}
    hit = [o for o in _orders(truth)
           if any(i["kind"] == "hub_congestion" for i in o["incidents"])]
    scans = _scans_by_order(records)
    for o in hit:
        assert _ts(o["delivered_at"]) - _ts(base[o["order_id"]]["delivered_at"]) == 86400
        seq = sorted(scans[o["order_id"]], key=lambda r: r["value"]["occurred_at"])
        i = next(k for k, r in enumerate(seq) if r["value"]["location"] == CONGESTED_HUB)
        gap = _ts(seq[i + 1]["value"]["occurred_at"]) - _ts(seq[i]["value"]["occurred_at"])
        assert gap > 86400  # held: nothing scanned at the hub for over a day
    assert sum(o["late"] for o in hit) > 0.8 * len(hit)


def test_integration_failure_keeps_orders_from_the_warehouse_until_it_is_back(
        scenario_worlds) -> None:
    records, truth = scenario_worlds["integration_failure"]
    meta = truth[0]["scenario"]
    hi = _ts(meta["end"])
    hit = {o["order_id"] for o in _orders(truth)
           if any(i["kind"] == "integration_failure" for i in o["incidents"])}
    wms = [r for r in records if "value" in r and "malformed" not in r and (
        (r["topic"] == "carrier-scans" and r["value"]["scan_type"] == "waybill_created"
         and r["key"] in hit)
        or (r["topic"] == "inventory" and r["value"].get("event_type") == "stock_picked"
            and r["value"].get("order_id") in hit))]
    assert wms and all(_ts(r["value"]["occurred_at"]) >= hi for r in wms)


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate(10, seed=1, scenario="meteor_strike")


# -- profiles (issue #8: the field's rates by default) ------------------------------------
def _placed_on(o: dict) -> str:
    """The order's local placement day, from its id (``ORD-YYYYMMDD-n``)."""
    d = o["order_id"].split("-")[1]
    return f"{d[:4]}-{d[4:6]}-{d[6:]}"


def _rates(truth: list[dict]) -> dict[str, float]:
    """Late share of due orders; share of orders whose tracking went stale, by kind of day."""
    promo = truth[0]["promo_day"]
    orders = _orders(truth)
    due = [o for o in orders if not o["cancelled"]]
    out = {"late": sum(o["late"] for o in due) / len(due)}
    for name, on_promo in (("stale_normal", False), ("stale_promo", True)):
        day = [o for o in orders if (_placed_on(o) == promo) == on_promo]
        stale = [o for o in day if any(i["kind"] == "tracking_stale" for i in o["incidents"])]
        out[name] = len(stale) / len(day)
    return out


@pytest.fixture(scope="module")
def field_20k() -> tuple[list[dict], list[dict]]:
    return simulate(20000, seed=7)  # the default profile


def test_the_default_world_is_at_the_fields_rates(field_20k) -> None:
    """Issue #8: 4-6 % of due orders late, tracking not updated (carrier scans stop for
    over 20 h) for 1-2 % of orders on a normal day and ~5 % on the promotion day."""
    _, truth = field_20k
    assert truth[0]["profile"] == "field"
    r = _rates(truth)
    print(f"\nfield 20k/7: {r}")
    assert 0.04 <= r["late"] <= 0.06
    assert 0.01 <= r["stale_normal"] <= 0.02
    assert 0.04 <= r["stale_promo"] <= 0.06


def test_the_stress_world_is_the_harder_one(big) -> None:
    _, truth = big
    assert truth[0]["profile"] == "stress"
    r = _rates(truth)
    assert r["late"] > 0.14  # what the stress-pinned tests were written against


@pytest.mark.parametrize("name", ["carrier_outage", "hub_congestion", "integration_failure"])
def test_a_scenario_on_the_field_world_leaves_every_other_order_alone(name) -> None:
    base = simulate(3000, seed=7)
    records, truth = simulate(3000, seed=7, scenario=name)
    assert truth[0]["profile"] == "field" and truth[0]["scenario"]["name"] == name
    hit = [o for o in _orders(truth) if any(i["kind"] == name for i in o["incidents"])]
    assert truth[0]["scenario"]["affected_orders"] == len(hit) > 20
    by_id = {o["order_id"]: o for o in _orders(base[1])}
    assert all(by_id[o["order_id"]] == o for o in _orders(truth) if o not in hit)
    assert len(records) == len(base[0])


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        simulate(10, seed=1, profile="utopia")


def test_dropped_reservation_releases_change_nothing_else(monkeypatch) -> None:
    """A cancel whose OMS release is dropped is labelled on its order; every other record is
    what the same seed makes with no release dropped (dropped after the world is made, so
    event ids and the noise draws do not shift; that the draw itself leaves the world's
    random stream alone was checked against the simulator before it, 20k/seed 7)."""
    import delaywatch.simulate as sim

    monkeypatch.setattr(sim, "UNRELEASED_RATE", 0.0)
    all_kept, truth_kept = simulate(2000, seed=5)
    monkeypatch.setattr(sim, "UNRELEASED_RATE", 0.3)
    records, truth = simulate(2000, seed=5)

    held = {o["order_id"]: o for o in _orders(truth)
            if any(i["kind"] == "reservation_not_released" for i in o["incidents"])}
    assert held and all(o["cancelled"] for o in held.values())
    now = {orjson.dumps(r) for r in records}
    gone = [r for r in all_kept if orjson.dumps(r) not in now]
    assert gone and all(r["value"]["event_type"] == "reservation_released"
                        and r["value"]["order_id"] in held for r in gone)
    ids = {id(r) for r in gone}
    assert [r for r in all_kept if id(r) not in ids] == records
    released = {r["value"]["order_id"] for r in records if r["topic"] == "inventory"
                and r["value"]["event_type"] == "reservation_released"}
    assert not released & set(held)
    assert truth[0]["events"] == len(records) == len(all_kept) - len(gone)
    for a, b in zip(_orders(truth_kept), _orders(truth), strict=True):
        if b["order_id"] in held:
            [inc] = [i for i in b["incidents"] if i not in a["incidents"]]
            # detectable when the detector's grace has run out after the cancel
            assert inc["kind"] == "reservation_not_released" and inc["detectable_at"]
        else:
            assert a == b
