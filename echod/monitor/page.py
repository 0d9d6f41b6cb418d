# -*- test-case-name: tests.unit.test_monitor_page -*-
"""
The status page, at C{/} of the monitor's listener: one row per target
address with its state now, and a graph of the last 3 or 24 hours drawn in SVG on
the server (the median round-trip time as a line over its spread, the
loss as bars below).  No script, nothing loaded from elsewhere; the page
reloads itself every 30 seconds.

Everything is built with L{twisted.web.template} tags, so a target name, a
label or an error message is escaped by construction, wherever it comes
from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.template import Tag, flattenString, tags

from echod.monitor.history import VIEWS, Bucket
from echod.monitor.schedule import AddressState, Scheduler, TargetState

__all__ = ["COLOURS", "ROWS_PER_PAGE", "StatusPage", "renderPage"]

ROWS_PER_PAGE = 200
# Graph colours; the browser test looks for them in a screenshot.
COLOURS = {
    "spread": "#9ecae1",
    "median": "#08519c",
    "loss": "#e6550d",
    "down": "#fcbba1",
}
_RTT_HEIGHT = 40
_LOSS_HEIGHT = 12
_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left;
         vertical-align: middle; font-size: 13px; }
td.up { background: #c7e9c0; } td.down { background: #fcbba1; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.error { color: #a50f15; font-size: 11px; } .labels { color: #555; font-size: 11px; }
svg { display: block; background: #f7f7f7; }
"""


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


def _scale(highest: float) -> float:
    """
    A round top for the RTT axis, at or above C{highest} (seconds).
    """
    top = 0.0001
    while top < highest:
        for step in (2, 2.5, 2):
            top *= step
            if top >= highest:
                break
    return top


def graph(buckets: list[Bucket | None]) -> Tag:
    """
    The SVG graph of one address over the buckets given (oldest first),
    two pixels a bucket.
    """
    width = 2 * len(buckets)
    highs = sorted(b.high for b in buckets if b is not None and b.high is not None)
    medians = [b.median for b in buckets if b is not None and b.median is not None]
    # An outlier does not flatten the graph: the axis covers the medians and
    # most of the spread; what is above is cut at the top.
    top = _scale(max(1.5 * max(medians), highs[(len(highs) - 1) * 9 // 10])) if highs else 0.001
    shapes: list[Tag] = []
    line: list[str] = []

    def y(rtt: float) -> float:
        return round(_RTT_HEIGHT - min(rtt / top, 1.0) * _RTT_HEIGHT, 1)

    for i, bucket in enumerate(buckets):
        x = i * 2
        if bucket is None:
            if len(line) > 1:
                shapes.append(_line(line))
            line = []
            continue
        if bucket.median is None or bucket.low is None or bucket.high is None:
            shapes.append(_rect(x, 0, 2, _RTT_HEIGHT, COLOURS["down"]))
            if len(line) > 1:
                shapes.append(_line(line))
            line = []
        else:
            high, low = y(bucket.high), y(bucket.low)
            shapes.append(_rect(x, high, 2, max(low - high, 1), COLOURS["spread"]))
            line.append(f"{x + 1},{y(bucket.median)}")
        if bucket.loss > 0:
            height = max(1.0, round(bucket.loss * _LOSS_HEIGHT, 1))
            shapes.append(_rect(x, _RTT_HEIGHT + _LOSS_HEIGHT - height, 2, height, COLOURS["loss"]))
    if len(line) > 1:
        shapes.append(_line(line))
    elif len(line) == 1:
        px, py = line[0].split(",")
        shapes.append(_rect(float(px) - 1, float(py) - 1, 2, 2, COLOURS["median"]))
    height = _RTT_HEIGHT + _LOSS_HEIGHT
    return Tag("svg")(
        Tag("title")(f"round-trip time, 0 to {_ms(top)} (median over spread); loss below"),
        Tag("line")(x1="0", y1=str(_RTT_HEIGHT), x2=str(width), y2=str(_RTT_HEIGHT), stroke="#ccc"),
        *shapes,
        Tag("text")(_ms(top), x="2", y="9", fill="#666", **{"font-size": "9"}),
        xmlns="http://www.w3.org/2000/svg",
        width=str(width),
        height=str(height),
        viewBox=f"0 0 {width} {height}",
        role="img",
    )


def _rect(x: float, y: float, width: float, height: float, fill: str) -> Tag:
    return Tag("rect")(
        x=f"{x:g}",
        y=f"{y:g}",
        width=f"{width:g}",
        height=f"{height:g}",
        fill=fill,
        **{"shape-rendering": "crispEdges"},
    )


def _line(points: list[str]) -> Tag:
    return Tag("polyline")(
        points=" ".join(points),
        fill="none",
        stroke=COLOURS["median"],
        **{"stroke-width": "1.5"},
    )


def _rows(scheduler: Scheduler) -> Iterator[tuple[TargetState, AddressState | None]]:
    for state in scheduler.states.values():
        if not state.addresses:
            yield state, None
        for address in state.addresses.values():
            yield state, address


def _matches(state: TargetState, address: AddressState | None, query: str, down: bool) -> bool:
    if down and address is not None and address.up:
        return False
    if not query:
        return True
    words = [state.target.name, *(v for _, v in state.target.labels)]
    if address is not None:
        words.append(address.address)
    return any(query in word for word in words)


def _row(state: TargetState, address: AddressState | None, now: float, view: str) -> Tag:
    target = state.target
    labels = ", ".join(f"{k}={v}" for k, v in target.labels)
    if state.more:
        labels += f"{'; ' if labels else ''}{state.more} more addresses not probed (max_addresses)"
    if address is None:
        why = state.error or "not probed yet"
        return tags.tr(
            tags.td("down", class_="down"),
            tags.td(target.name, tags.div(labels, class_="labels")),
            tags.td("\u2013"),
            tags.td("\u2013"),
            tags.td(target.protocol),
            tags.td("\u2013", class_="num"),
            tags.td("\u2013", class_="num"),
            tags.td(tags.div(why, class_="error")),
        )
    last = address.last
    summary = address.lastSummary
    loss = (1 - last.received / last.sent) if last is not None and last.sent else None
    state_ = "up" if address.up else "down"
    error = address.lastError if not address.up else None
    if state.error and not address.up:
        error = state.error
    cell = tags.td(graph(address.history.buckets(now, view)))
    if error:
        cell(tags.div(error, class_="error"))
    return tags.tr(
        tags.td(state_, class_=state_),
        tags.td(target.name, tags.div(labels, class_="labels")),
        tags.td(address.address),
        tags.td(address.family),
        tags.td(target.protocol),
        tags.td(_ms(summary[0] if summary else None), class_="num"),
        tags.td("\u2013" if loss is None else f"{loss * 100:.0f} %", class_="num"),
        cell,
    )


def renderPage(
    scheduler: Scheduler,
    now: float,
    query: str = "",
    down: bool = False,
    page: int = 1,
    view: str = "3h",
) -> bytes:
    """
    The whole page for the state of C{scheduler} at C{now}: the rows that
    match C{query} (a part of a target, address or label value), only
    those down with C{down}, L{ROWS_PER_PAGE} of them from page C{page},
    their graphs over C{view} (a key of L{VIEWS}).
    """
    rows = [(s, a) for s, a in _rows(scheduler) if _matches(s, a, query, down)]
    total = sum(len(s.addresses) or 1 for s in scheduler.states.values())
    downCount = sum(1 for s, a in _rows(scheduler) if a is None or not a.up)
    pages = max(1, -(-len(rows) // ROWS_PER_PAGE))
    page = min(max(1, page), pages)
    shown = rows[(page - 1) * ROWS_PER_PAGE : page * ROWS_PER_PAGE]
    seconds, count = VIEWS[view]
    hours = seconds * count / 3600

    def link(**changes: str) -> str:
        parameters = {"q": query, "range": view, **changes}
        if down:
            parameters["down"] = "1"
        return "?" + urlencode(parameters)

    navigation = tags.p()
    for number in range(1, pages + 1):
        shownNumber = tags.a(str(number), href=link(page=str(number)))
        navigation(shownNumber if number != page else tags.strong(str(number)), " ")
    views = tags.span()
    for name, (bucketSeconds, buckets) in VIEWS.items():
        label = f"{bucketSeconds * buckets / 3600:g} hours"
        views(" ", tags.a(label, href=link(range=name)) if name != view else tags.strong(label))
    column = "a minute" if seconds == 60 else f"{seconds // 60} minutes"
    document = tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(**{"http-equiv": "refresh", "content": "30"}),
            tags.title("echod monitor"),
            tags.style(_STYLE),
        ),
        tags.body(
            tags.h1("echod monitor"),
            tags.p(
                f"{len(scheduler.states)} targets, {total} addresses: {total - downCount} up, "
                f"{downCount} down. ",
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
                f". Graphs: the last {hours:g} hours, one column {column}. Show:",
                views,
            ),
            tags.form(
                tags.input(type="text", name="q", value=query, placeholder="target, address"),
                tags.label(
                    tags.input(
                        type="checkbox",
                        name="down",
                        value="1",
                        **({"checked": "checked"} if down else {}),
                    ),
                    " down only",
                ),
                tags.input(type="hidden", name="range", value=view),
                tags.input(type="submit", value="show"),
                method="get",
            ),
            tags.table(
                tags.tr(
                    *(
                        tags.th(name)
                        for name in (
                            "state",
                            "target",
                            "address",
                            "family",
                            "protocol",
                            "RTT",
                            "loss",
                            f"last {hours:g} hours",
                        )
                    )
                ),
                *(_row(s, a, now, view) for s, a in shown),
            ),
            navigation if pages > 1 else "",
        ),
        lang="en",
    )
    rendered: list[bytes] = []
    flattenString(None, document).addCallback(rendered.append)
    return b"<!DOCTYPE html>\n" + rendered[0]


class StatusPage(Resource):
    """
    C{GET /}: the page, rendered now, in the reactor thread.
    """

    isLeaf = True

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__()
        self.scheduler = scheduler

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: / (status), /metrics, /healthz\n"
        args = request.args or {}

        def argument(name: bytes) -> str:
            values = args.get(name) or [b""]
            return str(values[0].decode("utf-8", "replace"))[:200]

        page = argument(b"page")
        number = int(page) if page.isascii() and page.isdigit() and len(page) < 7 else 1
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"
        )
        view = argument(b"range")
        return renderPage(
            self.scheduler,
            self.scheduler.reactor.seconds(),
            argument(b"q"),
            argument(b"down") == "1",
            number,
            view if view in VIEWS else "3h",
        )
