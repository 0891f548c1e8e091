"""Customer-facing messages (Korean and English), stage-aware, built from alert facts."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["customer_message", "whereabouts"]


def _md_hm(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return "-"
    d = datetime.fromtimestamp(ts, tz)
    return f"{d.month}/{d.day} {d.hour:02d}:{d.minute:02d}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def whereabouts(stage: str | None, *, last_scan_type: str | None, last_location: str | None,
                last_scan_at: float | None, tz: ZoneInfo) -> tuple[str, str] | None:
    """Where the parcel is, from its stage (``ProcessStage`` values) and its last scan.

    >>> from zoneinfo import ZoneInfo
    >>> ko, en = whereabouts("in_transit", last_scan_type="departed_hub",
    ...                      last_location="옥천 허브", last_scan_at=1779454800.0,
    ...                      tz=ZoneInfo("Asia/Seoul"))
    >>> ko
    '5/22 22:00 옥천 허브 출발, 다음 분류 허브로 이동 중'
    >>> en
    'left 옥천 허브 at 22:00 on 5/22, on its way to the next sorting hub'
    """
    when = _md_hm(last_scan_at, tz)
    hm = when.split(" ")[-1]
    day = when.split(" ")[0]
    loc = last_location or ""
    if stage == "order":
        return "결제 확인 대기 중", "waiting for payment"
    if stage == "stock_check":
        return "재고 확인 중", "being checked for stock"
    if stage == "pick_pack":
        return "상품 준비 중", "being picked and packed"
    if stage == "waybill":
        return "송장 발행, 택배사 인계 대기 중", "labelled, waiting for the carrier's pickup"
    if stage == "handover":
        return f"{when} 택배사 인수", f"picked up by the carrier at {hm} on {day}"
    if stage == "in_transit" and loc:
        if last_scan_type == "arrived_at_hub":
            return (f"{when} {loc} 도착, 분류 대기 중",
                    f"arrived at {loc} at {hm} on {day}, waiting to be sorted")
        if last_scan_type == "departed_hub":
            return (f"{when} {loc} 출발, 다음 분류 허브로 이동 중",
                    f"left {loc} at {hm} on {day}, on its way to the next sorting hub")
        return f"{when} {loc} 통과", f"seen at {loc} at {hm} on {day}"
    if stage == "in_transit":
        return "배송 중", "on its way"
    if stage == "out_for_delivery":
        return f"{when} 배송 출발", f"out for delivery since {hm} on {day}"
    return None


def _arriving(ts: float | None, tz: ZoneInfo) -> tuple[str, str] | None:
    if ts is None:
        return None
    d = datetime.fromtimestamp(ts, tz)
    return f"{d.day}일 도착 예정", f"arriving on the {_ordinal(d.day)}"


def _status(where: tuple[str, str] | None, arrive: tuple[str, str] | None) -> tuple[str, str]:
    """'5/22 22:00 옥천 허브 출발, ..., 25일 도착 예정. ' and its English."""
    parts = [p for p in (where, arrive) if p is not None]
    if not parts:
        return "", ""
    ko = ", ".join(p[0] for p in parts)
    en = ", ".join(p[1] for p in parts)
    return f"{ko}. ", f"{en[0].upper()}{en[1:]}. "


def customer_message(
    kind: str, *, promised_at: float | None, last_scan_at: float | None,
    last_location: str | None, eta: float | None, tz: ZoneInfo, late_h: float | None = None,
    window: tuple[float, float] | None = None, stage: str | None = None,
    last_scan_type: str | None = None, compensated: bool = True,
) -> tuple[str | None, str | None]:
    """(Korean, English) text for the customer, or (None, None) for internal-only alerts;
    warnings say where the parcel is (its stage and last scan) and when it should arrive."""
    where = whereabouts(stage, last_scan_type=last_scan_type, last_location=last_location,
                        last_scan_at=last_scan_at, tz=tz)
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
        now_ko, now_en = _status(where, None)
        return (
            now_ko + f"도착 예정일({promise})보다 늦어질 수 있습니다"
            + (f", 예상 도착 {eta_txt}" if eta_txt else "")
            + ". 변동 시 즉시 안내드리겠습니다.",
            now_en + f"Your delivery may arrive after {promise}"
            + (f"; now expected {eta_txt}" if eta_txt else "")
            + ". We will update you if anything changes.",
        )
    if kind == "delay_risk" and window is not None:
        lo, hi = _md_hm(window[0], tz), _md_hm(window[1], tz).split(" ")[1]
        now_ko, now_en = _status(where, _arriving(window[1], tz))
        return (
            now_ko + f"배송이 예정({promise})보다 늦어질 수 있습니다. 도착 예정 {lo}–{hi}, "
            "변동 시 즉시 안내드리겠습니다.",
            now_en + f"Your delivery may be later than promised ({promise}): "
            f"now expected {lo}–{hi}. "
            "We will update you if anything changes.",
        )
    if kind == "promise_broken":
        now_ko, now_en = _status(where, _arriving(eta, tz))
        return (
            f"약속드린 도착 시간({promise})을 지키지 못해 죄송합니다. " + now_ko
            + ("보상 쿠폰을 보내드립니다." if compensated else "").rstrip(),
            f"We are sorry we missed the promised time ({promise}). " + now_en
            + ("A compensation coupon is on its way." if compensated else "").rstrip(),
        )
    return None, None
