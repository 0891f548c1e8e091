"""The KPI report as one self-contained HTML file (issue #8).

Plots are matplotlib figures embedded as inline SVG: no script, no CDN, nothing fetched when
the file is opened, so an analyst can mail it and it reads offline in any browser. The
numbers come from ``delaywatch.report``; this module only draws and lays out.
"""

from __future__ import annotations

import html
import io
import math
import operator
from typing import Any

import pandas as pd

from delaywatch.config.settings import KpiTargets
from delaywatch.report import (
    ReportData,
    calibration,
    cause_mix_table,
    incident_list,
    incidents,
    kpi_table,
    lead_times,
)

__all__ = ["render_html"]

RATE_COLUMNS = ("on_time_rate", "delay_rate", "unannounced_late_rate", "proactive_notice_rate",
                "stock_mismatch_rate", "share", "share_of_late", "mean_p_late", "observed_late")
COLORS = {"on_time_rate": "#2a9d8f", "delay_rate": "#e76f51",
          "proactive_notice_rate": "#264653", "unannounced_late_rate": "#f4a261",
          "stock_mismatch_rate": "#8d6cab"}
LABELS = {"on_time_rate": "on-time", "delay_rate": "delay",
          "proactive_notice_rate": "proactive notice", "unannounced_late_rate": "unannounced late",
          "stock_mismatch_rate": "stock mismatch"}


# -- plots ------------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    # a fixed hash salt and no date: the same data gives the same file
    with matplotlib.rc_context({"svg.hashsalt": "delaywatch", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _placeholder(text: str) -> str:
    """In place of a plot with nothing to draw (an empty figure would be scaled up)."""
    return f'<div class="placeholder">{html.escape(text)}</div>'


def _figure(width: float = 7.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def _percent_axis(ax: Any, top: float = 1.0) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, top)
    ax.grid(axis="y", alpha=0.3)


def _rates_by_day(daily: pd.DataFrame, cols: tuple[str, str], targets: dict[str, float],
                  title: str) -> str:
    fig, ax = _figure()
    days = daily[daily["orders"] > 0]
    x = range(len(days))
    for col in cols:
        ax.plot(x, days[col], marker="o", color=COLORS[col], label=LABELS[col])
        if col in targets:
            ax.axhline(targets[col], color=COLORS[col], ls="--", lw=1,
                       label=f"target {LABELS[col]} {targets[col]:.0%}")
    ax.set_xticks(list(x), [d[5:] for d in days["day"]], rotation=45, fontsize=8)
    ax.set_xlabel("day the order was placed")
    ax.set_title(title, fontsize=11)
    _percent_axis(ax, 1.05)  # a line at 100 % stays visible
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _bars(table: pd.DataFrame, by: str, cols: tuple[str, ...], title: str) -> str:
    fig, ax = _figure()
    table = table[table["orders"] > 0].reset_index(drop=True)
    width = 0.8 / len(cols)
    for i, col in enumerate(cols):
        xs = [j + (i - (len(cols) - 1) / 2) * width for j in range(len(table))]
        values = table[col].fillna(0)
        ax.bar(xs, values, width, color=COLORS[col], label=LABELS[col])
        for xv, v in zip(xs, values, strict=True):
            ax.text(xv, v + 0.01, f"{v:.0%}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(table)), [f"{v}\n({n:,} orders)"
                                      for v, n in zip(table[by], table["orders"], strict=True)],
                  fontsize=8)
    ax.set_title(title, fontsize=11)
    _percent_axis(ax, 1.1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _cause_mix(data: ReportData) -> str:
    mix = cause_mix_table(data, "carrier")
    overall = cause_mix_table(data).assign(carrier="all")
    both = pd.concat([overall, mix], ignore_index=True)
    if both.empty:
        return _placeholder("no late order: no promise_broken alert")
    fig, ax = _figure(7.0, 2.8)
    wide = both.pivot_table(index="carrier", columns="cause", values="share", fill_value=0.0)
    wide = wide.reindex(["all", *sorted(mix["carrier"].unique())])
    totals = both.groupby("carrier")["orders"].sum()
    left = [0.0] * len(wide)
    cmap = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8d6cab", "#6c757d",
            "#a8dadc"]
    for k, cause in enumerate(wide.columns):
        vals = list(wide[cause])
        ax.barh(range(len(wide)), vals, left=left, color=cmap[k % len(cmap)], label=cause)
        for i, v in enumerate(vals):
            if v >= 0.06:
                ax.text(left[i] + v / 2, i, f"{v:.0%}", ha="center", va="center", fontsize=7,
                        color="white")
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(range(len(wide)), [f"{c} ({int(totals[c]):,})" for c in wide.index],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("cause of late orders (promise_broken alerts), by carrier", fontsize=11)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _lead_histogram(data: ReportData) -> str:
    late = data.orders[data.orders["late"]]
    lead = late["lead_hours"].dropna()
    if lead.empty:
        return _placeholder("no late order was announced before its promise")
    fig, ax = _figure()
    top = max(6.0, math.ceil(float(lead.max()) / 6) * 6)
    ax.hist(lead, bins=[i * 3.0 for i in range(int(top / 3) + 1)], color="#264653")
    med = float(lead.median())
    ax.axvline(med, color="#e76f51", ls="--", label=f"median {med:.1f} h")
    ax.set_xlabel("hours between the first delay alert and the promise")
    ax.set_ylabel("late orders")
    unannounced = len(late) - len(lead)
    ax.set_title(f"lead time of {len(lead):,} announced late orders "
                 f"({unannounced:,} late orders not announced)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def _calibration_plot(table: pd.DataFrame) -> str:
    if table.empty:
        return _placeholder("calibration: no model predictions (a replay without --models, "
                            "or live topics, which do not carry them)")
    fig, ax = _figure(7.0, 3.2)
    ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="perfect")
    ax.plot(table["mean_p_late"], table["observed_late"], marker="o", color="#e76f51",
            label="delay-risk model")
    for x, y, n in zip(table["mean_p_late"], table["observed_late"], table["scorings"],
                       strict=True):
        ax.annotate(f"{int(n):,}", (x, y), textcoords="offset points", xytext=(4, -10),
                    fontsize=6)
    ax.set_xlabel("mean predicted p_late (bin)")
    ax.set_ylabel("observed late share")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("calibration: scorings before the promise", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


# -- tables -----------------------------------------------------------------------------------
def _fmt(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if col in RATE_COLUMNS:
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(df: pd.DataFrame, empty: str = "none") -> str:
    if df.empty:
        return f'<p class="none">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(str(c), v)}</td>" for c, v in zip(df.columns, row,
                                                                          strict=True)) + "</tr>"
        for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# each KPI card: the KpiTargets field it is held against, and how
_BOUNDS: tuple[tuple[str, str, str], ...] = (
    ("on_time_rate", "on_time_rate_min", "≥"), ("delay_rate", "delay_rate_max", "<"),
    ("unannounced_late_rate", "unannounced_late_rate_max", "≤"),
    ("proactive_notice_rate", "proactive_notice_rate_min", "≥"),
    ("stock_mismatch_rate", "stock_mismatch_rate_max", "≤"))
_MEETS = {"≥": operator.ge, "<": operator.lt, "≤": operator.le}


def _cards(overall: pd.Series, targets: KpiTargets) -> str:
    out = []
    for col, field, sign in _BOUNDS:
        value, bound = float(overall[col]), float(getattr(targets, field))
        cls = "na" if math.isnan(value) else ("ok" if _MEETS[sign](value, bound) else "miss")
        out.append(f'<div class="card {cls}"><div class="v">{_fmt(col, value)}</div>'
                   f'<div class="l">{html.escape(LABELS[col])} rate</div>'
                   f'<div class="t">best operators {sign} {bound:.0%}</div></div>')
    per_1000 = float(overall["alerts_per_1000_orders"])
    out.append(f'<div class="card na"><div class="v">{_fmt("", per_1000)}</div>'
               f'<div class="l">delay alerts per 1,000 orders</div>'
               f'<div class="t">{int(overall["orders"]):,} orders, '
               f'{int(overall["late"]):,} late of {int(overall["due"]):,} due</div></div>')
    return '<div class="cards">' + "".join(out) + "</div>"


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;
max-width:1300px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid
#ddd;padding-bottom:4px}.meta{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 14px;min-width:150px}
.card .v{font-size:24px;font-weight:600}.card .l{font-size:13px}.card .t{font-size:11px;
color:#666}.card.ok{border-left:6px solid #2a9d8f}.card.miss{border-left:6px solid #e76f51}
.card.na{border-left:6px solid #bbb}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;flex:0 1 630px}
figure svg{width:100%;height:auto}figcaption{font-size:12px;color:#555;max-width:640px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #ddd;
padding:3px 7px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}
.none{color:#666;font-style:italic}.placeholder{color:#666;font-style:italic;
border:1px dashed #ccc;padding:40px 20px;text-align:center;width:560px}
"""


def _figure_html(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def render_html(data: ReportData, targets: KpiTargets | None = None,
                title: str = "delaywatch KPI report", source: str = "") -> str:
    """The whole report: KPI cards against the targets, plots, then every table."""
    targets = targets or KpiTargets()
    overall = kpi_table(data)
    daily, weekly = kpi_table(data, "day"), kpi_table(data, "week")
    by_carrier, by_warehouse = kpi_table(data, "carrier"), kpi_table(data, "warehouse_id")
    calib = calibration(data.predictions)
    goals = {"on_time_rate": targets.on_time_rate_min, "delay_rate": targets.delay_rate_max,
             "proactive_notice_rate": targets.proactive_notice_rate_min,
             "unannounced_late_rate": targets.unannounced_late_rate_max}
    rates4 = ("on_time_rate", "delay_rate", "proactive_notice_rate", "unannounced_late_rate")
    plots = [
        _figure_html(_rates_by_day(daily, ("on_time_rate", "delay_rate"), goals,
                                   "on-time and delay rate by day"),
                     "Share of due orders (delivered, or past their promise) placed that day "
                     "that arrived on time / late; dashed: the best operators' targets."),
        _figure_html(_rates_by_day(daily, ("proactive_notice_rate", "unannounced_late_rate"),
                                   goals, "late orders told before their promise, by day"),
                     "Of the late orders placed that day: share with a delay alert before the "
                     "promise (proactive notice) and without one (unannounced late)."),
        _figure_html(_bars(by_carrier, "carrier", rates4, "by carrier"),
                     "The four delivery KPIs per carrier."),
        _figure_html(_bars(by_warehouse, "warehouse_id", (*rates4, "stock_mismatch_rate"),
                           "by warehouse"),
                     "The delivery KPIs per shipping warehouse, and the share of its "
                     "warehouse:sku keys whose WMS and OMS snapshots disagreed."),
        _figure_html(_cause_mix(data),
                     "Cause the stream diagnosed when each late order's promise passed "
                     "(kpi.cause_mix), overall and per carrier; in brackets: late orders."),
        _figure_html(_lead_histogram(data),
                     "How long before the promise ops first heard of each late order that "
                     "was announced (3-hour bins)."),
        _figure_html(_calibration_plot(calib),
                     "Binned delay-risk p_late against the observed late share; on the "
                     "diagonal the probabilities can be taken at face value. Numbers: "
                     "scorings per bin."),
    ]
    as_of = data.as_of.isoformat() if data.as_of is not None else "–"
    sections = [
        ("KPIs per day (placement day, " + data.timezone + ")", _table(daily)),
        ("KPIs per ISO week", _table(weekly)),
        ("KPIs per carrier", _table(by_carrier)),
        ("KPIs per warehouse", _table(by_warehouse)),
        ("Cause mix of late orders", _table(cause_mix_table(data))),
        ("Cause mix by carrier", _table(cause_mix_table(data, "carrier"))),
        ("Cause mix by warehouse", _table(cause_mix_table(data, "warehouse_id"))),
        ("Lead-time distribution of late orders", _table(lead_times(data))),
        ("Incidents (incident / feed_outage / system alerts)",
         _table(incidents(data.alerts), "none were found")),
        ("Incident list (alerts.system: scope, since, orders affected or in flight)",
         _table(incident_list(data.alerts), "none were found")),
        ("Model calibration", _table(calib, "none: no model predictions in this data")),
    ]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(source)} · data up to {html.escape(as_of)} · '
        f"days in {html.escape(data.timezone)} · definitions: README, “KPI report”</p>",
        _cards(overall.iloc[0], targets),
        '<h2>Plots</h2><div class="grid">', *plots, "</div>",
        *(f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections),
        "</body></html>",
    ])
