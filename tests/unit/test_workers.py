"""
The supervisor's side of the wire from the workers (L{echod.workers}), with a
fake clock and captured logs: no process is started.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    LogLevel,
    capturedLogs,
    eventAsJSON,
    formatEventAsClassicLogText,
)

from echod.config import Config
from echod.worker import EVENT
from echod.workers import WorkerMonitor


def test_workerEventsNameTheirWorker() -> None:
    """
    A worker's log event is logged by the main process with the worker's
    name: as a field (JSON lines) and where text lines name the logger.
    """
    monitor = WorkerMonitor(MemoryReactorClock(), Config())
    with capturedLogs() as seen:
        event = {
            "log_format": "127.0.0.1:5000 connected to 127.0.0.1:7007",
            "log_namespace": "echod.echo.EchoProtocol",
            "log_level": LogLevel.info,
            "log_time": 0.0,
            "event": "connection.opened",
        }
        monitor.lineFromWorker("worker-2", (EVENT + eventAsJSON(event)).encode())
    (logged,) = [e for e in seen if e.get("event") == "connection.opened"]
    assert logged["worker"] == "worker-2"
    text = formatEventAsClassicLogText(logged)
    assert text is not None
    assert "[worker-2 echod.echo.EchoProtocol#info] 127.0.0.1:5000 connected" in text
