"""
The twistd plugins are found and provide IServiceMaker.
"""

from __future__ import annotations

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from zope.interface.verify import verifyObject

import twisted.plugins


class PluginTests:
    def test_threePlugins(self) -> None:
        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        for name in ("echod", "echod-client", "echod-sniff"):
            assert name in makers, f"{name} not among {sorted(makers)}"
            assert verifyObject(IServiceMaker, makers[name])
        assert makers["echod"].options.__module__ == "echod.tap.server"
        assert makers["echod"].description.count("\n") == 0
