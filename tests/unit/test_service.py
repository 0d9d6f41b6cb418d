"""
Tests for L{echod.app} that need no sockets.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, capturedLogs

from echod import config
from echod.errors import ListenError
from echod.server.listeners import EchoService, ListenerService
from tests.reactortesting import EchodMemoryReactor


class FakeListener(ListenerService):
    """
    A listener that fails like a host without IPv6 (or with a taken port),
    and opens nothing.
    """

    def __init__(self, description: str, factory: object, reactor: object, listen: str) -> None:
        self.description = description
        self.listen = listen
        self.failWith = FAILURES.get(description)

    def privilegedStartService(self) -> None:
        if self.failWith is not None:
            raise ListenError(f"cannot listen on {self.description}", errno=self.failWith)

    def whenListening(self) -> Deferred[Any]:
        return Deferred()


FAILURES: dict[str, int] = {}


@pytest.fixture(autouse=True)
def clearFailures() -> None:
    FAILURES.clear()


def service(listen: tuple[str, ...]) -> EchoService:
    cfg = config.Config(server=config.ServerConfig(listen=listen))
    return EchoService(cfg, EchodMemoryReactor(), listener=FakeListener)


class IPv4FallbackTests:
    def test_defaultFallsBackWithoutIPv6(self) -> None:
        """
        The embedded default (dual-stack on ::) becomes IPv4 on a host
        without IPv6, and says so.
        """
        FAILURES[config.DEFAULT_LISTEN] = errno.EAFNOSUPPORT
        echo = service((config.DEFAULT_LISTEN,))
        with capturedLogs() as events:
            echo.privilegedStartService()
        assert [x.description for x in echo.listeners] == [config.DEFAULT_LISTEN_IPV4]
        warnings: list[LogEvent] = [e for e in events if "IPv6 is not available" in e["log_format"]]
        assert warnings

    def test_busyDefaultPortIsAnError(self) -> None:
        FAILURES[config.DEFAULT_LISTEN] = errno.EADDRINUSE
        with pytest.raises(ListenError):
            service((config.DEFAULT_LISTEN,)).privilegedStartService()

    def test_explicitListenersNeverFallBack(self) -> None:
        explicit = r"tcp6:port=7:interface=\:\:1"
        FAILURES[explicit] = errno.EAFNOSUPPORT
        with pytest.raises(ListenError):
            service((explicit,)).privilegedStartService()

    def test_listenersGetTheBacklog(self) -> None:
        echo = service(("tcp:7",))
        listener = echo.listeners[0]
        assert isinstance(listener, FakeListener)
        assert listener.listen == "tcp:7:backlog=1024"
        assert listener.description == "tcp:7"


class ReloadTests:
    """
    What takes a restart is compared with what runs, not with the last
    configuration reloaded.
    """

    def test_restoringTheRunningListenWarnsNoMore(self) -> None:
        """
        SIGHUP with a changed C{listen} warns; restoring the original file
        and SIGHUP again does not warn again, but says the file matches what
        runs; a third identical reload says nothing about it.
        """
        from echod.app import makeService

        original = config.Config(server=config.ServerConfig(listen=("tcp:7007",)))
        changed = config.Config(server=config.ServerConfig(listen=("tcp:7008",)))
        files = [changed, original, original]
        root = makeService(original, EchodMemoryReactor(), reload=lambda: files.pop(0))

        def reload() -> list[LogEvent]:
            with capturedLogs() as events:
                assert root.reload()
            return [e for e in events if e.get("event", "").startswith("config.reload_")]

        (warned,) = reload()
        assert warned["event"] == "config.reload_partial"
        assert warned["keys"] == "server.listen"
        (matches,) = reload()
        assert matches["event"] == "config.reload_matches"
        assert matches["log_level"].name == "info"
        assert matches["keys"] == "server.listen"
        assert reload() == []


def test_reloadLogsEveryProblemOfTheFile() -> None:
    """
    A file with several problems: SIGHUP logs each as its own C{reload failed}
    event, one line each, and the running configuration stays.
    """
    from echod.app import makeService

    def broken() -> config.Config:
        return config.loads('[server]\nbacklog = 0\n[log]\nformat = "xml"\n', "e.toml")

    root = makeService(config.Config(), EchodMemoryReactor(), reload=broken)
    with capturedLogs() as events:
        assert not root.reload()
    failed = [e for e in events if e.get("event") == "config.reload_failed"]
    assert [e["error"] for e in failed] == [
        "e.toml: line 2: server.backlog = 0: expected an integer from 1 to 65535",
        'e.toml: line 4: log.format = "xml": expected one of "text", "json"',
    ]
    assert all(e["log_level"].name == "error" for e in failed)
