# -*- test-case-name: tests.unit.test_config -*-
"""
echod's configuration: one TOML file, one table per part, every key with a
default; the schema, the endpoint strings it names, and loading.

Import from here; the modules inside are how it is built:
L{errors<echod.config.errors>} (L{ConfigError} and how values are shown),
L{kinds<echod.config.kinds>} (the validators),
L{files<echod.config.files>} (reading named files of bounded size),
L{endpoints<echod.config.endpoints>} (endpoint strings),
L{schema<echod.config.schema>} (the tables and L{Config}),
L{screen<echod.config.screen>} (bounds checked before the TOML parser),
L{loading<echod.config.loading>} (text and files to a L{Config}),
L{document<echod.config.document>} (a L{Config} as a line of JSON and back).
"""

from echod.config.document import dumps, loadsDocument
from echod.config.endpoints import (
    DatagramEndpoint,
    clientEndpointTypes,
    endpointParameters,
    parseDatagramEndpoint,
    tcp6ClientParameters,
    withBacklog,
)
from echod.config.errors import MAX_PROBLEMS, ConfigError
from echod.config.files import FileProblem, readRegularFile
from echod.config.loading import (
    checkInheritedSockets,
    errorAbout,
    errorAt,
    isSet,
    load,
    loads,
    override,
)
from echod.config.schema import (
    DEFAULT_LISTEN,
    DEFAULT_LISTEN_IPV4,
    ClientConfig,
    Config,
    LogConfig,
    MetricsConfig,
    MonitorConfig,
    ServerConfig,
    SniffConfig,
    UDPConfig,
    sections,
    setting,
)
from echod.config.screen import MAX_KEY_PARTS, MAX_NESTING
from echod.config.targets import MonitorTarget

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_LISTEN_IPV4",
    "MAX_KEY_PARTS",
    "MAX_NESTING",
    "MAX_PROBLEMS",
    "ClientConfig",
    "Config",
    "ConfigError",
    "DatagramEndpoint",
    "FileProblem",
    "LogConfig",
    "MetricsConfig",
    "MonitorConfig",
    "MonitorTarget",
    "ServerConfig",
    "SniffConfig",
    "UDPConfig",
    "checkInheritedSockets",
    "clientEndpointTypes",
    "dumps",
    "endpointParameters",
    "errorAbout",
    "errorAt",
    "isSet",
    "load",
    "loads",
    "loadsDocument",
    "override",
    "parseDatagramEndpoint",
    "readRegularFile",
    "sections",
    "setting",
    "tcp6ClientParameters",
    "withBacklog",
]
