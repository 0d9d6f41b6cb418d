"""
The monitor's status page in a real browser: headless Chromium (Debian's
C{chromium}) loads it from a running C{twistd echod-monitor} and takes a
screenshot, and the graphs are found in its pixels: the RTT spread and
median of the targets that answer, the loss of the one that refuses, each
in the row of its own.  The PNG is decoded here (zlib and struct), no
image library needed.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from echod.monitor.page import COLOURS
from tests.daemon import Twistd
from tests.e2e.test_monitor import echodConfig, monitorConfig, rounds, scrapeUntil
from tests.environment import freePort, requireTool

pytestmark = pytest.mark.e2e


def pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """
    The width, height and rows (3 bytes a pixel, RGB) of an 8-bit RGB or
    RGBA PNG, non-interlaced, as Chromium writes them.
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, data = 8, b""
    width = height = depth = colour = interlace = 0
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        chunk = png[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            data += chunk
    assert (depth, colour, interlace) in ((8, 2, 0), (8, 6, 0)), (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(data)
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        method = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up = previous[i]
            corner = previous[i - size] if i >= size else 0
            if method == 1:
                line[i] = (line[i] + left) & 0xFF
            elif method == 2:
                line[i] = (line[i] + up) & 0xFF
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif method == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + nearest) & 0xFF
        previous = line
        if size == 4:
            rows.append(b"".join(bytes(line[i : i + 3]) for i in range(0, stride, 4)))
        else:
            rows.append(bytes(line))
    return width, height, rows


def rgb(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def where(rows: list[bytes], colour: bytes) -> Iterator[tuple[int, int]]:
    for y, row in enumerate(rows):
        for x in range(0, len(row), 3):
            if row[x : x + 3] == colour:
                yield x // 3, y


def bands(ys: set[int]) -> list[tuple[int, int]]:
    """
    The runs of consecutive rows in C{ys}: one per graph drawn.
    """
    result: list[tuple[int, int]] = []
    for y in sorted(ys):
        if result and y - result[-1][1] <= 4:
            result[-1] = (result[-1][0], y)
        else:
            result.append((y, y))
    return result


def test_pngDecoder(tmp_path: Path) -> None:
    """
    The decoder reads back a PNG of known pixels with every filter type.
    """
    width, height = 5, 5
    image = [
        bytes((x * 40, y * 50, (x * y) % 256)) * 1 for y in range(height) for x in range(width)
    ]
    rows = [b"".join(image[y * width : (y + 1) * width]) for y in range(height)]
    raw = b""
    previous = bytes(width * 3)
    for y, row in enumerate(rows):
        method = y % 5
        encoded = bytearray()
        for i, byte in enumerate(row):
            left = row[i - 3] if i >= 3 else 0
            up = previous[i]
            corner = previous[i - 3] if i >= 3 else 0
            predictor = [0, left, up, (left + up) // 2, 0][method]
            if method == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            encoded.append((byte - predictor) & 0xFF)
        raw += bytes([method]) + bytes(encoded)
        previous = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    assert pixels(png) == (width, height, rows)


def test_graphsRenderInChromium(tmp_path: Path) -> None:
    chromium = requireTool("chromium")
    port, listen, closed = freePort(), freePort(), freePort()
    (tmp_path / "echod.toml").write_text(echodConfig(port, ipv6=False))
    up, udp, refused = f"127.0.0.1:{port}", f"udp://127.0.0.1:{port}", f"127.0.0.1:{closed}"
    config = tmp_path / "monitor.toml"
    config.write_text(monitorConfig(listen, [up, udp, refused]))
    (tmp_path / "m").mkdir()
    with Twistd(tmp_path, ["--config", str(tmp_path / "echod.toml")]) as server:
        server.listeningPorts(2)
        with Twistd(tmp_path / "m", ["--config", str(config)], command="echod-monitor"):
            scrapeUntil(
                listen,
                lambda s: (
                    rounds(s, up, "127.0.0.1", "ipv4", "tcp") >= 2
                    and rounds(s, udp, "127.0.0.1", "ipv4", "udp") >= 2
                ),
            )
            screenshot = tmp_path / "page.png"
            result = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'chromium'}",
                    "--window-size=1280,600",
                    f"--screenshot={screenshot}",
                    f"http://127.0.0.1:{listen}/",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
    assert screenshot.exists(), result.stderr
    width, height, rows = pixels(screenshot.read_bytes())
    assert (width, height) == (1280, 600)
    spread = {y for _, y in where(rows, rgb(COLOURS["spread"]))}
    median = {y for _, y in where(rows, rgb(COLOURS["median"]))}
    loss = {y for _, y in where(rows, rgb(COLOURS["loss"]))}
    # The two targets that answer: a graph each, their median over their
    # spread; the one that refuses: loss, in a row of its own, below.
    assert len(bands(spread)) == 2, bands(spread)
    for low, high in bands(spread):
        assert any(low - 2 <= y <= high + 2 for y in median), (low, high, sorted(median))
    assert len(bands(loss)) == 1
    assert min(loss) > max(spread)
    right = {x for x, _ in where(rows, rgb(COLOURS["spread"]))}
    assert min(right) > width // 2  # in the graph column, at its newest end
