"""Customer-facing messages (Korean and English), stage-aware, built from alert facts."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["customer_message"]


def _md_hm(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return "-"
    d = datetime.fromtimestamp(ts, tz)
    return f"{d.month}/{d.day} {d.hour:02d}:{d.minute:02d}"


def customer_message(
    kind: str, *, promised_at: float | None, last_scan_at: float | None,
    last_location: str | None, eta: float | None, tz: ZoneInfo, late_h: float | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[str | None, str | None]:
    """(Korean, English) text for the customer, or (None, None) for internal-only alerts."""
    promise = _md_hm(promised_at, tz)
    where_ko = f"{last_location}에서 " if last_location else ""
    where_en = f" at {last_location}" if last_location else ""
    when = _md_hm(last_scan_at, tz)
    if kind in ("waybill_missing", "stock_shortage"):
        return (
            f"주문하신 상품의 출고 준비가 지연되고 있습니다 (도착 예정 {promise}). "
            "변동 시 즉시 안내드리겠습니다.",
            f"Your order is taking longer to leave the warehouse (due {promise}). "
            "We will update you as soon as anything changes.",
        )
    if kind == "handover_missed":
        return (
            f"택배사 인계가 지연되고 있습니다 (도착 예정 {promise}). "
            "변동 시 즉시 안내드리겠습니다.",
            f"Handover to the carrier is delayed (due {promise}). We will keep you posted.",
        )
    if kind == "tracking_stale":
        return (
            f"{when} {where_ko}마지막으로 확인된 후 배송 정보가 갱신되지 않고 있습니다. "
            "택배사에 확인 중이며 곧 안내드리겠습니다.",
            f"Last seen{where_en} on {when}; tracking has not been updated since. "
            "We are checking with the carrier.",
        )
    if kind == "carrier_exception":
        return (
            f"배송 중 문제가 발생했습니다 ({when}). 재배송 일정을 곧 안내드리겠습니다.",
            f"There was a problem with your delivery ({when}). "
            "We will send the new delivery time shortly.",
        )
    if kind == "promise_at_risk":
        eta_txt = _md_hm(eta, tz) if eta else None
        return (
            f"도착 예정일({promise})보다 늦어질 수 있습니다"
            + (f", 예상 도착 {eta_txt}" if eta_txt else "")
            + ". 변동 시 즉시 안내드리겠습니다.",
            f"Your delivery may arrive after {promise}"
            + (f"; now expected {eta_txt}" if eta_txt else "")
            + ". We will update you if anything changes.",
        )
    if kind == "delay_risk" and window is not None:
        lo, hi = _md_hm(window[0], tz), _md_hm(window[1], tz).split(" ")[1]
        return (
            f"배송이 예정({promise})보다 늦어질 수 있습니다. 도착 예정 {lo}–{hi}, "
            "변동 시 즉시 안내드리겠습니다.",
            f"Your delivery may be later than promised ({promise}): now expected {lo}–{hi}. "
            "We will update you if anything changes.",
        )
    if kind == "promise_broken":
        return (
            f"약속드린 도착 시간({promise})을 지키지 못해 죄송합니다. 보상 쿠폰을 보내드립니다.",
            f"We are sorry we missed the promised time ({promise}). "
            "A compensation coupon is on its way.",
        )
    return None, None
