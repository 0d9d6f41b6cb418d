"""
C{twistd echod-monitor}: its options (the config file checked before
anything starts), the service tree it makes, and the reload of its targets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from zope.interface.verify import verifyObject

import twisted.plugins
from echod import config as _config
from echod.app import EchodService
from echod.interfaces import IReconfigurable
from echod.metrics.listener import MetricsService
from echod.monitor.page import StatusPage
from echod.monitor.service import MonitorService
from echod.tap import monitor
from tests.reactortesting import EchodMemoryReactor


def parse(*argv: str) -> monitor.Options:
    options = monitor.Options()
    options.parseOptions(list(argv))
    return options


def configFile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return str(path)


def test_plugin() -> None:
    """
    twistd finds echod-monitor, a service maker of echod.tap.monitor.
    """
    makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
    maker = makers["echod-monitor"]
    assert verifyObject(IServiceMaker, maker)
    assert maker.options is monitor.Options


def test_configRequired() -> None:
    with pytest.raises(usage.UsageError, match="--config FILE"):
        parse()


def test_badFileIsOneLine(tmp_path: Path) -> None:
    """
    A bad target is one line naming the file, its line and the item.
    """
    path = configFile(tmp_path, "[monitor]\ntargets = ['echo.example:99999']\n")
    with pytest.raises(_config.ConfigError) as caught:
        parse("--config", path)
    assert caught.value.lines() == [
        f'{path}: line 2: monitor.targets[1] = "echo.example:99999": port 99999 is not '
        "from 1 to 65535"
    ]


def test_noTargets(tmp_path: Path) -> None:
    path = configFile(tmp_path, "[monitor]\ninterval = 5\n")
    with pytest.raises(_config.ConfigError) as caught:
        parse("--config", path)
    assert "no targets" in str(caught.value)


def test_serviceTree(tmp_path: Path) -> None:
    """
    The root owns the signals and health; under it the monitor and its
    listener, whose / is the status page.
    """
    path = configFile(
        tmp_path,
        "[monitor]\nlisten = 'tcp:0:interface=127.0.0.1'\ntargets = ['a.example:7']\n",
    )
    root = monitor.makeService(parse("--config", path), EchodMemoryReactor())
    assert isinstance(root, EchodService)
    children = list(root)
    assert [type(c) for c in children] == [MonitorService, MetricsService]
    listener = children[1]
    assert isinstance(listener, MetricsService)
    assert isinstance(listener.site.resource.children[b""], StatusPage)
    assert set(listener.site.resource.children) == {b"", b"metrics", b"healthz"}
    assert verifyObject(IReconfigurable, children[0])


def test_noListener(tmp_path: Path) -> None:
    path = configFile(tmp_path, "[monitor]\nlisten = ''\ntargets = ['a.example:7']\n")
    root = monitor.makeService(parse("--config", path), EchodMemoryReactor())
    assert isinstance(root, EchodService)
    assert [type(c) for c in root] == [MonitorService]


def test_reloadKeepsUnchangedTargets(tmp_path: Path) -> None:
    """
    A reload keeps the state of the targets that did not change, starts the
    new ones and drops the others; the concurrency limit follows the file.
    """
    path = configFile(tmp_path, "[monitor]\ntargets = ['a.example:7', 'b.example:7']\n")
    options = parse("--config", path)
    service = MonitorService(options.config, EchodMemoryReactor())
    before = dict(service.scheduler.states)
    Path(path).write_text(
        "[monitor]\nmax_concurrency = 3\ntargets = ['a.example:7', 'c.example:7']\n"
    )
    service.reconfigure(options.loadConfig())
    names = [t.name for t in service.scheduler.states]
    assert names == ["a.example:7", "c.example:7"]
    kept = next(t for t in before if t.name == "a.example:7")
    assert service.scheduler.states[kept] is before[kept]
    assert service.scheduler.maxConcurrency == 3
