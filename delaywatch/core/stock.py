"""Stock logic: the ledger of one warehouse:sku from WMS/OMS events and re-keyed order lines."""

from __future__ import annotations

from typing import Any

from delaywatch.config.thresholds import Thresholds
from delaywatch.core.alerts import Finding, Transition, ts_to_dt
from delaywatch.core.engine import Forward
from delaywatch.core.state import StockState
from delaywatch.models.audience import audience_for
from delaywatch.models.rules import StockRules
from delaywatch.models.stock_risk import StockModels
from delaywatch.schemas.alerts import Alert, AlertStatus, alert_id_for
from delaywatch.schemas.events import InventoryEvent, InventoryEventType

__all__ = ["INVENTORY", "OrderLineMsg", "StockLogic", "lines_stream"]

INVENTORY = "inventory"
NOTIFIED_LIMIT = 200
UNRELEASED = "reservation_not_released"


def lines_stream(origin: int) -> str:
    """Order lines from shipment partition ``origin`` form one ordered stream."""
    return f"lines:{origin}"


OrderLineMsg = dict[str, Any]  # {"kind": "line"|"release", order_id, warehouse_id, sku, ...}


class StockLogic:
    """Keyed logic for the stock table (key = warehouse_id:sku) of one partition."""

    def __init__(self, thresholds: Thresholds, models: StockModels | None = None,
                 partition: int = 0) -> None:
        self.rules = StockRules(thresholds)
        self.partition = partition  # notices say where they come from (one ordered stream)
        self.models = models  # learned detectors (issue #4): None = rules only

    def new_state(self, key: str) -> StockState:
        warehouse, _, sku = key.partition(":")
        return StockState(key=key, warehouse_id=warehouse, sku=sku)

    def on_receipt(self, s: StockState, stream: str, event: Any, clocks: dict[str, float]) -> list:
        return []

    def apply(self, s: StockState, stream: str, event: Any, at: float) -> list[Any]:
        models = self.models
        if models is not None:
            models.learn_one(s, event, at)  # sees the ledger the event arrives at
        if stream == INVENTORY:
            self._apply_inventory(s, event)
        else:
            line: OrderLineMsg = event
            order_id = line["order_id"]
            if line["kind"] == "line":
                if order_id not in s.cancels:  # a line ordered after its own release: late
                    s.demand[order_id] = max(s.demand.get(order_id, 0), int(line["quantity"]))
            else:
                s.demand.pop(order_id, None)
                # the cancel's own time (``at`` is later when it arrived late)
                self.rules.cancelled(s, order_id, float(line.get("occurred_at", at)))
        findings = self.rules.findings(s, at)
        if models is not None:
            findings += models.findings(s, at)
        out: list[Any] = self._evaluate(s, findings, at)
        out.extend(self._notices(s, at))
        return out

    def on_time(self, s: StockState, at: float) -> list[Any]:
        # only the rules: a cancel's grace ran out (the learned models judge at events)
        return self._evaluate(s, self.rules.findings(s, at), at)

    def next_due(self, s: StockState, after: float) -> float | None:
        return min((t for t in self.rules.deadlines(s) if t > after), default=None)

    def _evaluate(self, s: StockState, findings: list[Finding], at: float) -> list[Alert]:
        transitions = s.book.evaluate(s.key, findings, at)
        held = next(f for f in findings if f.kind == UNRELEASED)
        evidence = held.evidence() if callable(held.evidence) else held.evidence
        orders = [o["order_id"] for o in evidence.get("orders", [])]
        if any(t.kind == UNRELEASED for t in transitions):
            s.unreleased_told = orders  # opened with them, or resolved: none
        elif s.book.is_open(UNRELEASED) and orders != s.unreleased_told:
            # other orders held (one more, or one released while others are not): say so
            s.unreleased_told = orders
            s.unreleased_notices += 1
            ep = s.book.episodes[UNRELEASED]
            transitions.append(Transition(
                alert_id=alert_id_for(s.key, UNRELEASED, ep.number), kind=UNRELEASED,
                episode=ep.number, status=AlertStatus.UPDATED, severity=ep.severity,
                reason_codes=("held_orders_changed",),
                evidence={**evidence, "notice": s.unreleased_notices}, at=at))
        return [self._alert(s, t) for t in transitions]

    def expired(self, s: StockState, watermark: float) -> bool:
        return False

    def _apply_inventory(self, s: StockState, ev: InventoryEvent) -> None:
        t = ev.occurred_at.timestamp()
        q = ev.quantity
        wms = ev.source == "wms"
        et = ev.event_type
        if et == InventoryEventType.STOCK_SNAPSHOT:
            if wms:
                s.wms_level, s.wms_snapshot = q, (q, t)
            else:
                s.oms_level, s.oms_snapshot = q, (q, t)
            self.rules.update_mismatch(s)
        elif et in (InventoryEventType.STOCK_RECEIVED, InventoryEventType.STOCK_ADJUSTED,
                    InventoryEventType.STOCK_PICKED):
            delta = -q if et == InventoryEventType.STOCK_PICKED else q
            if wms and s.wms_level is not None:
                s.wms_level += delta
            elif not wms and s.oms_level is not None:
                s.oms_level += delta
            if et == InventoryEventType.STOCK_PICKED and ev.order_id:
                left = s.demand.get(ev.order_id, 0) - q
                if left > 0:
                    s.demand[ev.order_id] = left
                else:
                    s.demand.pop(ev.order_id, None)
                self.rules.settle(s, ev.order_id)  # its reservation was used
        elif et == InventoryEventType.STOCK_RESERVED and ev.order_id:
            s.demand[ev.order_id] = max(s.demand.get(ev.order_id, 0), q)
            self.rules.reserve(s, ev.order_id, q, t)
        elif et == InventoryEventType.RESERVATION_RELEASED and ev.order_id:
            s.demand.pop(ev.order_id, None)
            self.rules.settle(s, ev.order_id)

    def _notices(self, s: StockState, at: float) -> list[Forward]:
        """Tell each order whose demand lies beyond what is on hand, once."""
        if s.wms_level is None:
            return []
        room = max(s.wms_level, 0)
        out: list[Forward] = []
        for order_id, qty in s.demand.items():
            room -= qty
            if room < 0 and order_id not in s.notified:
                s.notified.append(order_id)
                out.append(Forward("stock_notices", order_id, {
                    "notice_id": f"{s.key}:{order_id}", "order_id": order_id,
                    "origin": self.partition,
                    "warehouse_id": s.warehouse_id, "sku": s.sku, "shortfall": min(qty, -room),
                    "occurred_at": ts_to_dt(at).isoformat(),
                }))
        if len(s.notified) > NOTIFIED_LIMIT:
            s.notified = s.notified[-NOTIFIED_LIMIT:]
        return out

    def _alert(self, s: StockState, t: Transition) -> Alert:
        return Alert(
            alert_id=t.alert_id, status=t.status, category="stock", kind=t.kind, key=s.key,
            episode=t.episode, severity=t.severity, reason_codes=list(t.reason_codes),
            evidence=t.evidence, detected_at=ts_to_dt(t.at), warehouse_id=s.warehouse_id,
            sku=s.sku, audience=audience_for(t.kind, "stock"),
        )
