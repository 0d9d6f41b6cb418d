"""
The status page: a row per target address with its state and a graph,
every name, label and message escaped, whatever the file or the network
put in them.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import cast

from twisted.web.template import flattenString
from twisted.web.test.requesthelper import DummyRequest

from echod.interfaces import IClientReactor
from echod.monitor.history import VIEWS, Bucket
from echod.monitor.page import COLOURS, ROWS_PER_PAGE, StatusPage, graph, renderPage
from echod.monitor.probes import ProbeResult
from echod.monitor.schedule import AddressState, Scheduler, TargetState
from echod.monitor.targets import Target
from tests.reactortesting import EchodMemoryReactor

NOW = 1_800_000_000.0
HOSTILE = '<script>alert("x")</script>&"\''


def scheduler(targets: list[Target]) -> Scheduler:
    result = Scheduler(cast(IClientReactor, EchodMemoryReactor()), 10, 8)
    result.update(targets)
    return result


def target(name: str, labels: tuple[tuple[str, str], ...] = ()) -> Target:
    return Target(name, "tcp", "echo.example", 7, 10, 1, 64, 3, 0, True, labels)


def withAddress(state: TargetState, address: str, ok: bool, error: str | None = None) -> None:
    where = AddressState(address, "ipv4")
    for minute in range(60):
        at = NOW - minute * 60
        result = ProbeResult(
            "success" if ok else "timeout",
            3,
            3 if ok else 1,
            0,
            (0.001, 0.002, 0.005),
            0.001,
            error,
            at,
        )
        where.record(result)
    state.addresses[address] = where


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: bytes) -> Elements:
    parser = Elements()
    parser.feed(page.decode("utf-8"))
    return parser


def test_hostileNamesEscaped() -> None:
    """
    A target name, a label value and an error message holding markup are
    shown as text: no element of theirs reaches the page.
    """
    hostile = target(HOSTILE, (("site", HOSTILE),))
    monitor = scheduler([hostile])
    withAddress(monitor.states[hostile], "192.0.2.1", False, HOSTILE)
    page = renderPage(monitor, NOW)
    elements = parse(page)
    assert "script" not in elements.tags
    assert HOSTILE in "".join(elements.text)
    assert b"<script>" not in page


def test_rowPerAddressWithGraph() -> None:
    """
    Each address of a target is a row with its state, family and graph;
    a target not resolved yet is one row saying why.
    """
    up, down, never = target("up.example:7"), target("down.example:7"), target("never:7")
    monitor = scheduler([up, down, never])
    withAddress(monitor.states[up], "192.0.2.1", True)
    withAddress(monitor.states[up], "2001:db8::1", True)
    withAddress(monitor.states[down], "192.0.2.2", False, "connection refused")
    monitor.states[never].error = "never: name does not resolve"
    page = renderPage(monitor, NOW).decode()
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)[1:]
    assert len(rows) == 4
    assert [re.search(r'class="(up|down)"', r).group(1) for r in rows] == [  # type: ignore[union-attr]
        "up",
        "up",
        "down",
        "down",
    ]
    assert "connection refused" in rows[2]
    assert "name does not resolve" in rows[3]
    assert page.count("<svg") == 3
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_downOnlyAndSearch() -> None:
    """
    The page can show only the addresses down, or those whose target,
    address or label holds a text.
    """
    up, down = target("up.example:7", (("site", "fra1"),)), target("down.example:7")
    monitor = scheduler([up, down])
    withAddress(monitor.states[up], "192.0.2.1", True)
    withAddress(monitor.states[down], "192.0.2.2", False)
    assert "down.example" not in renderPage(monitor, NOW, query="fra1").decode()
    onlyDown = renderPage(monitor, NOW, down=True).decode()
    assert "up.example" not in onlyDown and "down.example" in onlyDown


def test_pages() -> None:
    """
    Rows come L{ROWS_PER_PAGE} to a page, with links to the others.
    """
    targets = [target(f"t{i}:7") for i in range(ROWS_PER_PAGE + 5)]
    monitor = scheduler(targets)
    first = renderPage(monitor, NOW).decode()
    second = renderPage(monitor, NOW, page=2).decode()
    assert first.count("<tr>") == ROWS_PER_PAGE + 1
    assert second.count("<tr>") == 6
    assert 'href="?q=&amp;range=3h&amp;page=2"' in first


def test_graphDrawsMedianSpreadAndLoss() -> None:
    """
    The graph draws the spread as boxes, the median as a line over them,
    loss as bars below, and a minute without answers as a red column.
    """
    buckets: list[Bucket | None] = [None] * VIEWS["3h"][1]
    for i in range(100, 110):
        buckets[i] = Bucket(i * 60.0, 6, 6, 30, 27, 0.002, 0.001, 0.004)
    buckets[110] = Bucket(110 * 60.0, 6, 0, 30, 0, None, None, None)
    svg = flattenString(None, graph(buckets))
    text: list[bytes] = []
    svg.addCallback(text.append)
    drawn = text[0].decode()
    assert drawn.count(f'fill="{COLOURS["spread"]}"') == 10
    assert drawn.count(f'fill="{COLOURS["loss"]}"') == 11
    assert drawn.count(f'fill="{COLOURS["down"]}"') == 1
    assert drawn.count("<polyline") == 1


def test_addressesLeftOutSaid() -> None:
    """
    A name with more addresses than max_addresses says how many were
    left out.
    """
    many = target("many.example:7")
    monitor = scheduler([many])
    withAddress(monitor.states[many], "192.0.2.1", True)
    monitor.states[many].more = 3
    assert "3 more addresses not probed (max_addresses)" in renderPage(monitor, NOW).decode()


def test_resourceEscapesTheQuery() -> None:
    """
    GET / with a hostile search: the text typed is shown back escaped,
    the page forbids scripts and anything from elsewhere, and is not
    cached; a bad page number is the first page.
    """
    monitor = scheduler([target("a.example:7")])
    request = DummyRequest([b""])
    request.args = {b"q": [HOSTILE.encode()], b"page": [b"\xd9\xa8"]}
    page = StatusPage(monitor).render_GET(request)  # type: ignore[arg-type]
    assert b"<script>" not in page
    assert "script" not in parse(page).tags
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"content-security-policy") == [
        b"default-src 'none'; style-src 'unsafe-inline'"
    ]
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]


def test_dayView() -> None:
    """
    ?range=24h draws the last 24 hours, ten minutes a column, and links
    back to the 3 hours; an unknown range is the 3 hours.
    """
    t = target("a.example:7")
    monitor = scheduler([t])
    withAddress(monitor.states[t], "192.0.2.1", True)
    for view, width, words in (("24h", 288, "last 24 hours"), ("1y", 360, "last 3 hours")):
        request = DummyRequest([b""])
        request.args = {b"range": [view.encode()]}
        page = StatusPage(monitor).render_GET(request).decode()  # type: ignore[arg-type]
        assert f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}"' in page
        assert words in page
    day = renderPage(monitor, NOW, view="24h").decode()
    assert "one column 10 minutes" in day
    assert 'href="?q=&amp;range=3h"' in day
