"""
Tests for L{echod.tap.server}: the twistd echod command's options.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IService, MultiService
from twisted.python.usage import UsageError

from echod.config import ConfigError
from echod.server.listeners import EchoService
from echod.tap.server import Options, makeService
from tests.reactortesting import EchodMemoryReactor


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests:
    def test_defaults(self) -> None:
        options = parse()
        assert options.config.source is None
        assert options.config.server.listen == (r"tcp6:port=7007:interface=\:\:",)

    def test_configFile(self, tmp_path: Path) -> None:
        path = tmp_path / "e.toml"
        path.write_text('[server]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbacklog = 7\n')
        options = parse("--config", str(path))
        assert options.config.server.listen == ("tcp:0:interface=127.0.0.1",)
        assert options.config.source == str(path)

    def test_listenRepeatsAndOverridesFile(self, tmp_path: Path) -> None:
        path = tmp_path / "e.toml"
        path.write_text('[server]\nlisten = ["tcp:1"]\n')
        options = parse("-c", str(path), "--listen", "tcp:0", "-l", "unix:/tmp/e.sock")
        assert options.config.server.listen == ("tcp:0", "unix:/tmp/e.sock")

    def test_badFileIsConfigError(self, tmp_path: Path) -> None:
        """
        A bad file raises ConfigError (one line, printed by echod's hook), not
        UsageError (which would print the whole usage text first).
        """
        path = tmp_path / "e.toml"
        path.write_text("[server]\nbacklog = -1\n")
        with pytest.raises(ConfigError, match=r"line 2: server.backlog = -1"):
            parse("--config", str(path))

    def test_badListen(self) -> None:
        with pytest.raises(ConfigError, match="--listen"):
            parse("--listen", "tcp:notaport")

    def test_unknownOptionIsUsageError(self) -> None:
        with pytest.raises(UsageError):
            parse("--colour")


class MakeServiceTests:
    def test_assemblesWithoutListening(self) -> None:
        """
        makeService only assembles: nothing listens until the service starts.
        """
        reactor = EchodMemoryReactor()
        options = parse("--listen", "tcp:0:interface=127.0.0.1")
        root = makeService(options, reactor)
        assert IService.providedBy(root)
        assert isinstance(root, MultiService)
        assert reactor.tcpServers == []
        echo = [s for s in root if isinstance(s, EchoService)]
        assert len(echo) == 1
        root.privilegedStartService()
        assert [port[0] for port in reactor.tcpServers] == [0]
        assert reactor.tcpServers[0][3] == "127.0.0.1"
        assert reactor.tcpServers[0][2] == 1024
