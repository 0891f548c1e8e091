"""Escalation core with explicit times: unacknowledged open alerts escalate one step per
level; acked or resolved ones never do, in any order of alert, ack and resolve."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delaywatch.config.thresholds import EscalationThresholds, load_thresholds
from delaywatch.core import escalation
from delaywatch.core.escalation import Escalator, Tracked, step_up
from delaywatch.schemas.acks import Ack
from delaywatch.schemas.alerts import Alert, Severity

T0 = 1_714_989_600.0  # 2024-05-06T10:00:00Z
TH = EscalationThresholds(after_s={"critical": 900.0, "high": 1800.0, "medium": 7200.0},
                          max_level=3, ack_keep_s=3600.0, forget_closed_after_s=86400.0,
                          forget_open_after_s=10 * 86400.0)


def alert(alert_id: str = "al-1", status: str = "open", severity: str = "high",
          at: float = T0, kind: str = "promise_broken", **extra: Any) -> dict[str, Any]:
    return {"alert_id": alert_id, "status": status, "category": "delay", "kind": kind,
            "key": "O-1", "episode": 1, "severity": severity, "reason_codes": ["r"],
            "evidence": {"late_h": 2}, "order_id": "O-1",
            "detected_at": datetime.fromtimestamp(at, tz=UTC).isoformat(), **extra}


def ack(alert_id: str = "al-1", at: float = T0) -> Ack:
    return Ack(alert_id=alert_id, by="ops-kim", at=datetime.fromtimestamp(at, tz=UTC))


def levels(out: list[Alert]) -> list[tuple[str, int, str]]:
    return [(a.alert_id, a.evidence["escalation"]["level"], a.severity.value) for a in out]


def test_docstring_example() -> None:
    assert doctest.testmod(escalation).failed == 0


def test_default_times_come_from_thresholds_yaml() -> None:
    th = load_thresholds().escalation
    assert th.after_s == {Severity.CRITICAL: 900, Severity.HIGH: 1800, Severity.MEDIUM: 7200}
    assert Severity.LOW not in th.after_s


def test_step_up_is_capped_at_critical() -> None:
    assert [step_up(s) for s in Severity] == [Severity.MEDIUM, Severity.HIGH,
                                              Severity.CRITICAL, Severity.CRITICAL]


def test_unacked_alert_escalates_once_per_level_and_re_arms() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert(severity="medium"), T0)
    assert esc.next_due() == T0 + 7200
    assert esc.due(T0 + 7199) == []
    first = esc.due(T0 + 7200)
    assert levels(first) == [("al-1", 1, "high")]
    copy = first[0]
    assert copy.status == "updated" and copy.alert_id == "al-1"
    assert copy.evidence["escalation"] == {"level": 1, "after_s": 7200.0,
                                           "from_severity": "medium",
                                           "since": "2024-05-06T10:00:00Z"}
    assert copy.evidence["late_h"] == 2  # the alert's own evidence is kept
    assert copy.audience == "cs" and copy.detected_at.timestamp() == T0 + 7200
    assert esc.due(T0 + 7200) == []  # once per level
    assert esc.next_due() == T0 + 7200 + 1800
    # a long pause: every level that came due, at its own time (re-page at critical), capped
    late = esc.due(T0 + 86400)
    assert levels(late) == [("al-1", 2, "critical"), ("al-1", 3, "critical")]
    assert [a.detected_at.timestamp() for a in late] == [T0 + 9000, T0 + 9900]
    assert esc.next_due() is None and esc.due(T0 + 2 * 86400) == []


def test_escalations_do_not_depend_on_how_often_due_is_called() -> None:
    a, b = Escalator(TH), Escalator(TH)
    for esc in (a, b):
        esc.on_alert(alert(severity="medium"), T0)
    many = [x for now in range(int(T0), int(T0 + 20000), 97) for x in a.due(float(now))]
    assert [x.model_dump() for x in many] == [x.model_dump() for x in b.due(T0 + 19999)]


def test_acked_alert_does_not_escalate_and_low_never_does() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert("al-1"), T0)
    esc.on_alert(alert("al-2"), T0)
    esc.on_alert(alert("al-3", severity="low"), T0)
    esc.on_ack(ack("al-2", T0 + 60), T0 + 60)
    assert levels(esc.due(T0 + 1800)) == [("al-1", 1, "critical")]
    assert esc.alerts["al-2"].closed == "acked" and esc.alerts["al-2"].acked_by == "ops-kim"
    esc.on_ack(ack("al-1"), T0 + 1900)  # acked after an escalation: no further level
    assert esc.due(T0 + 86400) == [] and esc.next_due() is None


def test_ack_before_the_alert_is_kept_for_a_while() -> None:
    esc = Escalator(TH)
    esc.on_ack(ack("al-1"), T0)
    esc.on_alert(alert("al-1"), T0 + 60)
    assert esc.due(T0 + 86400) == []
    esc.on_ack(ack("al-2"), T0)
    esc.due(T0 + 3600)  # the pending ack expired ...
    assert "al-2" not in esc.pending_acks
    esc.on_alert(alert("al-2"), T0 + 3600)  # ... so the alert escalates
    assert levels(esc.due(T0 + 3600 + 1800)) == [("al-2", 1, "critical")]


def test_resolved_never_escalates_and_a_late_open_is_ignored() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert(), T0)
    esc.on_alert(alert(status="resolved", at=T0 + 100), T0 + 100)
    esc.on_alert(alert("al-2", status="resolved", at=T0 + 100), T0 + 100)
    esc.on_alert(alert("al-2", at=T0), T0 + 101)  # its open, overtaken by the resolve
    assert esc.due(T0 + 86400 - 1) == [] and esc.next_due() is None


def test_duplicates_and_re_reads_change_nothing_but_a_severity_change_re_arms() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert(severity="medium"), T0)
    esc.on_alert(alert(severity="medium"), T0 + 3000)  # the same message again
    assert esc.next_due() == T0 + 7200
    esc.on_alert(alert(status="updated", severity="high", at=T0 + 3600), T0 + 3600)
    assert esc.next_due() == T0 + 3600 + 1800
    esc.on_alert(alert(severity="medium"), T0 + 3700)  # the open, re-read: older, ignored
    assert esc.alerts["al-1"].severity == "high" and esc.next_due() == T0 + 5400
    assert levels(esc.due(T0 + 5400)) == [("al-1", 1, "critical")]
    # the detector sends the same severity it had: no re-arm, the escalated one stays
    esc.on_alert(alert(status="updated", severity="high", at=T0 + 3600), T0 + 5500)
    assert esc.alerts["al-1"].severity == "critical"


def test_state_is_bounded() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert("al-1"), T0)
    esc.on_alert(alert("al-2", severity="low"), T0)
    esc.on_ack(ack("al-1"), T0 + 10)
    esc.on_ack(ack("al-9"), T0)
    esc.due(T0 + 86400 + 10)
    assert set(esc.alerts) == {"al-2"} and esc.pending_acks == {}
    esc.due(T0 + 10 * 86400)
    assert esc.alerts == {}


def test_take_changes_and_restore_round_trip() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert("al-1", severity="medium"), T0)
    esc.on_ack(ack("al-7"), T0)
    alerts, acks = esc.take_changes()
    assert set(alerts) == {"al-1"} and set(acks) == {"al-7"}
    assert esc.take_changes() == ({}, {})
    rows = {i: Tracked.from_row(t.to_row()) for i, t in esc.alerts.items() if t}
    again = Escalator.restore(TH, rows, dict(esc.pending_acks))
    assert [a.model_dump() for a in again.due(T0 + 9000)] == \
        [a.model_dump() for a in esc.due(T0 + 9000)]
    esc.on_ack(ack("al-1"), T0 + 9001)
    esc.due(T0 + 9001 + 86400)
    alerts, _ = esc.take_changes()
    assert alerts == {"al-1": None}  # forgotten: delete the row


def test_an_alert_of_another_audience_keeps_it() -> None:
    esc = Escalator(TH)
    esc.on_alert(alert(audience="admin"), T0)
    esc.on_alert(alert("al-2", kind="oversell", category="stock"), T0)
    got = {a.alert_id: a.audience for a in esc.due(T0 + 1800)}
    assert got == {"al-1": "admin", "al-2": "logistics"}


def test_not_an_alert_raises() -> None:
    with pytest.raises(ValueError):
        Escalator(TH).on_alert({"alert_id": "x"}, T0)


# -- any order of alert, ack and resolve --------------------------------------------------------
ANY = TH.model_copy(update={"ack_keep_s": 1e6})  # no ack expires within a history


@st.composite
def histories(draw: st.DrawFn) -> tuple[str, list[tuple[float, str]], float]:
    """(severity, [(time, what)] with what in open/ack/resolve, dup; end time)."""
    severity = draw(st.sampled_from(["low", "medium", "high", "critical"]))
    kinds = draw(st.lists(st.sampled_from(["ack", "resolve", "dup"]), max_size=4))
    events = [(draw(st.floats(0, 20000)), k) for k in ["open", *kinds]]
    return severity, sorted(events, key=lambda e: e[0]), draw(st.floats(0, 30000))


def expected(severity: str, events: list[tuple[float, str]], end: float) -> list[str]:
    """Reference: an alert arrives with its first open (or duplicate); an ack or resolve
    before that means it never escalates, one after it stops escalation from its time on
    (due() runs before every input, so a level due exactly then still fires)."""
    arrived: float | None = None
    stop = max(end, events[-1][0])
    for t, what in events:
        if what in ("open", "dup") and arrived is None:
            arrived = t
        elif what in ("ack", "resolve"):
            if arrived is None:
                return []
            stop = min(stop, t)
            break
    assert arrived is not None
    out, sev, since = [], Severity(severity), arrived
    for _ in range(ANY.max_level):
        after = ANY.after_s.get(sev)
        if after is None or since + after > stop:
            break
        since, sev = since + after, step_up(sev)
        out.append(sev.value)
    return out


@settings(max_examples=300, deadline=None)
@given(histories())
def test_any_order_of_alert_ack_and_resolve(history) -> None:
    severity, events, end = history
    esc, out = Escalator(ANY), []
    t_open = next(t for t, k in events if k == "open")
    for t, what in events:
        out += esc.due(t)
        if what in ("open", "dup"):
            esc.on_alert(alert(severity=severity, at=t_open), t)
        elif what == "ack":
            esc.on_ack(ack(at=t), t)
        else:
            esc.on_alert(alert(status="resolved", severity=severity, at=t), t)
    out += esc.due(max(end, events[-1][0]))
    assert [a.severity.value for a in out] == expected(severity, events, end)
    assert [a.evidence["escalation"]["level"] for a in out] == list(range(1, len(out) + 1))
