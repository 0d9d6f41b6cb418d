# -*- test-case-name: tests.unit.test_config_document -*-
"""
A configuration as data: one line of JSON holding each table's values as
TOML would write them, and its C{source}.  The main process sends it to its
workers; a worker validates it again with the validators and the rules
across keys of a file, so that what it runs is a L{Config} in every respect
and a damaged or forged line is a L{ConfigError}, never code run (as a
pickle would be) nor a traceback.

What the command line gave (L{Config.given}, L{Config.spellings}) is not in
the document: it only names options in errors the main process reports.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from echod.config.errors import ConfigError
from echod.config.loading import _fromTables, _Lines
from echod.config.schema import Config, sections

__all__ = ["dumps", "loadsDocument"]

_DOCUMENT = "<config document>"


def dumps(config: Config) -> str:
    """
    C{config} as one line of JSON (ASCII only, no newline): an object with
    C{source} and one object per table, every key with its value as TOML
    writes it (a tuple as a list, a port range as C{N} or C{"LOW-HIGH"}).
    L{loadsDocument} reads it back.
    """
    document: dict[str, object] = {"source": config.source}
    for section in sections():
        table = getattr(config, section.table)
        document[section.table] = {
            f.name: f.metadata["kind"].toTOML(getattr(table, f.name))
            for f in dataclasses.fields(section)
        }
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


def _refuseConstant(name: str) -> object:
    raise ValueError(f"{name} is not a value of TOML")


def _uniqueKeys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """
    An object of JSON, refused if it gives a key twice (json would keep the
    last one silently).
    """
    unique = dict(pairs)
    if len(unique) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {json.dumps(key)[:100]} is given twice")
            seen.add(key)
    return unique


def loadsDocument(text: str, source: str | None = None) -> Config:
    """
    The L{Config} of a document L{dumps} wrote, validated as a file is: every
    key by its validator, then the rules across keys; a table or key left
    out has its default.

    @param source: how errors name the document (such as C{"the main
        process"}); by default the file it came from, or C{<config document>}.
    @raise ConfigError: for anything but such a document of a valid
        configuration.
    """
    where = source or _DOCUMENT
    try:
        document = json.loads(text, parse_constant=_refuseConstant, object_pairs_hook=_uniqueKeys)
    except (ValueError, RecursionError, MemoryError) as e:
        # ValueError: not JSON, an integer of more than 4,300 digits, a key
        # given twice; RecursionError: arrays nested thousands deep.
        problem = str(e) if not isinstance(e, RecursionError) else "nested too deep"
        raise ConfigError(f"not a config document: {problem}", source=where) from None
    if not isinstance(document, dict):
        raise ConfigError("not a config document: expected a JSON object", source=where)
    origin = document.pop("source", None)
    if origin is not None and not isinstance(origin, str):
        raise ConfigError(
            "expected the name of a file, or null", source=where, key="source", value=origin
        )
    where = source or origin or _DOCUMENT
    config = _fromTables(document, where, where, _Lines(""))
    return dataclasses.replace(config, source=origin)
