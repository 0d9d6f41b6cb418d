# -*- test-case-name: tests.unit.test_workers -*-
"""
The wire between echod's main process and its workers (C{workers = N}): the
lines each writes to the other over the worker's standard input and output.
"""

from __future__ import annotations

import dataclasses

from echod.config import Config, dumps, loadsDocument

__all__ = [
    "ABORT",
    "CONFIG",
    "EVENT",
    "STATS",
    "STATS_INTERVAL",
    "STOP",
    "UDP_STATS",
    "configFromLine",
    "configLine",
]


# Lines a worker writes on its standard output: a log event, or its totals
# (TCP; UDP where it serves UDP listeners).
EVENT = "event "
STATS = "stats "
UDP_STATS = "udpstats "
STATS_INTERVAL = 1.0
# The lines the main process writes on a worker's standard input: its
# configuration; stop (drain, then exit); abort (cut the connections now).
CONFIG = b"config "
STOP = b"stop"
ABORT = b"abort"


def configLine(config: Config) -> bytes:
    """
    What a worker serves of C{config} (C{[server]}, C{[udp]} and C{[log]}:
    the other tables are the main process's own), as one line of data for its
    standard input: the values as the file would write them
    (L{echod.config.dumps}), never Python objects, so that a worker started
    by another echod version reads values, not that version's classes.
    """
    served = dataclasses.replace(Config(), server=config.server, udp=config.udp, log=config.log)
    served = dataclasses.replace(served, source=config.source)
    return CONFIG + dumps(served).encode("ascii") + b"\n"


def configFromLine(line: bytes) -> Config | None:
    """
    The configuration a C{config} line carries, validated again as a file
    is; L{None} for another line.

    @raise echod.config.ConfigError: if the line does not hold a valid one.
    """
    if not line.startswith(CONFIG):
        return None
    return loadsDocument(line[len(CONFIG) :].decode("utf-8", "replace"))
