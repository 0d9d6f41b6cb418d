# -*- test-case-name: tests.unit.test_config -*-
"""
Loading a configuration: TOML text or a file in, a validated L{Config} out,
or one L{ConfigError} with every problem, each naming the file, the line,
the key, the value and what is allowed.  An empty file, or no file at all,
gives the embedded defaults.  Values the command line gives replace keys of
one table (L{override}) and are validated the same way.

L{tomllib} keeps no positions, so the lines of tables and keys are found
again in the text (L{_Lines}).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from echod.config.endpoints import _NoReactor, endpointParameters
from echod.config.errors import _SHOW_KEY, MAX_PROBLEMS, ConfigError, _Invalid
from echod.config.files import FileProblem, readRegularFile
from echod.config.schema import _SECTIONS, Config
from echod.config.screen import MAX_CONFIG_BYTES, _screen
from echod.errors import oneLine

__all__ = [
    "checkInheritedSockets",
    "errorAbout",
    "errorAt",
    "isSet",
    "load",
    "loads",
    "override",
]

T = TypeVar("T")


class _Lines:
    """
    Where tables and keys are written in a config text (1-based lines).

    L{tomllib} keeps no positions, so this reads the text again, once, the
    simple way: table headers and C{key =} lines, and dotted keys (C{server.port
    = 1}).
    """

    def __init__(self, text: str) -> None:
        self._keys: dict[str, int] = {}
        self._headers: dict[str, int] = {}
        current = ""
        # Both patterns run in linear time, whatever the line holds.
        header = re.compile(r"[ \t]*\[([^\[\]\n]*)\][ \t]*(#.*)?$")
        keyPart = re.compile(r'[A-Za-z0-9_.\-" \t]+')
        for number, line in enumerate(text.split("\n"), 1):
            match = header.match(line)
            if match:
                current = re.sub(r'["\s]', "", match.group(1))
                self._headers.setdefault(current, number)
                continue
            equals = line.find("=", 0, 1000)
            if equals < 0 or not keyPart.fullmatch(line, 0, equals):
                continue
            name = re.sub(r'["\s]', "", line[:equals])
            if not name:
                continue
            full = f"{current}.{name}" if current else name
            # The key itself, and each table it is in (a dotted key's too).
            parts = full.split(".")
            for end in range(1, len(parts) + 1):
                self._keys.setdefault(".".join(parts[:end]), number)

    def of(self, table: str, key: str | None = None) -> int | None:
        """
        The line of C{table.key}; for a table, the first of its header and
        its first key (a dotted key, C{table.key = 1}, needs no header).
        """
        if key is not None:
            return self._keys.get(f"{table}.{key}")
        found = [n for n in (self._headers.get(table), self._keys.get(table)) if n is not None]
        return min(found, default=None)


def _locate(text: str, table: str, key: str | None = None) -> int | None:
    """
    The line (1-based) where C{[table]} or C{key} inside it is written.
    """
    return _Lines(text).of(table, key)


def _suggest(name: str, known: Sequence[str], hint: bool = True) -> str:
    close = difflib.get_close_matches(name, known, n=1) if hint else []
    suggestion = f"did you mean {close[0]}? " if close else ""
    return f"{suggestion}known: {', '.join(known)}"


def _fields(section: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(section)}


def _inFileOrder(problems: Sequence[ConfigError]) -> list[ConfigError]:
    """
    Problems by line; those without one after, in the order found.
    """
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _build(
    section: type[T],
    values: Mapping[str, object],
    source: str | None,
    lines: _Lines,
    base: T | None = None,
    origin: str | None = None,
) -> T:
    """
    The table C{section} from C{values}, each key checked on its own.

    @param origin: the command-line option the values came from, which
        errors then name instead of the file, line and key.
    @raise ConfigError: with every unknown key and bad value, in file order.
    """
    table = section.table  # type: ignore[attr-defined]
    known = _fields(section)
    problems: list[ConfigError] = []
    unknown = sorted(
        (name for name in values if name not in known),
        key=lambda name: lines.of(table, name) or 0,
    )
    for count, name in enumerate(unknown):
        # A suggestion for those that will be shown; a file of many
        # unknown keys is not worth a second of difflib.
        problem = f"unknown key ({_suggest(name, list(known), count < MAX_PROBLEMS)})"
        if origin is not None:
            problems.append(ConfigError(problem, key=origin))
        else:
            line = lines.of(table, name)
            problems.append(ConfigError(problem, source=source, line=line, key=f"{table}.{name}"))
    checked: dict[str, object] = {}
    for name, raw in values.items():
        if name not in known:
            continue
        kind = known[name].metadata["kind"]
        try:
            checked[name] = kind(raw)
        except _Invalid as e:
            key, value = f"{table}.{name}", raw
            if e.index is not None:
                key, value = f"{key}[{e.index}]", e.item
            if origin is not None:
                problems.append(ConfigError(str(e), key=origin, value=value))
            else:
                line = lines.of(table, name)
                problems.append(ConfigError(str(e), source=source, line=line, key=key, value=value))
    if problems:
        raise ConfigError.combine(_inFileOrder(problems))
    if base is not None:
        return dataclasses.replace(base, **checked)  # type: ignore[type-var]
    return section(**checked)


class _Names:
    """
    How errors about a loaded configuration name its keys: a value the
    command line gave by the option as the user typed it, a value of the file
    by the file, its line and the key.
    """

    def __init__(self, config: Config, lines: _Lines | None = None) -> None:
        self.config = config
        self._lines = lines

    def lines(self) -> _Lines:
        if self._lines is None:
            text = ""
            if self.config.source is not None:
                with contextlib.suppress(FileProblem, UnicodeDecodeError):
                    text = readRegularFile(self.config.source, MAX_CONFIG_BYTES).decode("utf-8")
            self._lines = _Lines(text)
        return self._lines

    def error(self, key: str, value: object, problem: str, item: int | None = None) -> ConfigError:
        """
        An error about C{key} (C{"sniff.rotate_count"}), or item C{item}
        (1-based) of the list it holds.
        """
        option = self.config.given.get(key)
        if option is not None:
            return ConfigError(problem, key=option, value=value)
        table, _, name = key.partition(".")
        shown = key if item is None else f"{key}[{item}]"
        return ConfigError(
            problem,
            source=self.config.source or None,
            line=self.lines().of(table, name) if self.config.source else None,
            key=shown,
            value=value,
        )

    def name(self, key: str, about: str) -> str:
        """
        How a message about C{about} mentions another key, C{key}: as the
        user gave it (its option, or its key in the file); a key given
        nowhere, by its option (in the form the user typed C{about}'s) when
        C{about} came from the command line, else by its key.
        """
        given = self.config.given
        if key in given:
            return given[key]
        table, _, name = key.partition(".")
        inFile = self.config.source is not None and self.lines().of(table, name) is not None
        if about in given and key in self.config.spellings and not inFile:
            long, short = self.config.spellings[key]
            return short if short is not None and not given[about].startswith("--") else long
        return key


def _check(config: Config, lines: _Lines | None = None) -> Config:
    """
    Rules that involve more than one key; every one broken is told.
    """
    names = _Names(config, lines)
    problems: list[ConfigError] = []
    if config.server.workers > 1:
        for index, description in enumerate(config.server.listen, 1):
            if endpointParameters(description)[0] == "ssl":
                problems.append(
                    names.error(
                        "server.listen",
                        description,
                        "ssl: listeners are served by one process: use workers = 1, or end "
                        "TLS in front of echod",
                        item=index,
                    )
                )
    if not config.server.listen and not config.udp.listen:
        problems.append(
            ConfigError(
                "nothing to listen on: server.listen and udp.listen are both empty",
                source=config.source,
            )
        )
    problems.extend(_checkSniff(names))
    problems.extend(_checkMonitor(names))
    if problems:
        raise ConfigError.combine(_inFileOrder(problems))
    return config


def _checkSniff(names: _Names) -> list[ConfigError]:
    sniff = names.config.sniff
    problems = []
    if sniff.rotate_count and not sniff.rotate_bytes and not sniff.rotate_seconds:
        other = names.name("sniff.rotate_bytes", "sniff.rotate_count")
        seconds = names.name("sniff.rotate_seconds", "sniff.rotate_count")
        problems.append(
            names.error(
                "sniff.rotate_count",
                sniff.rotate_count,
                f"needs {other} or {seconds} too (files rotate by size or by time)",
            )
        )
    for key in ("rotate_bytes", "rotate_seconds"):
        value = getattr(sniff, key)
        if value and sniff.output == "-":
            other = names.name("sniff.output", f"sniff.{key}")
            problems.append(
                names.error(
                    f"sniff.{key}",
                    value,
                    f"needs {other} to name a file (stdout cannot rotate)",
                )
            )
    if sniff.promiscuous and sniff.interface == "any":
        problems.append(
            names.error("sniff.promiscuous", sniff.promiscuous, 'needs one interface, not "any"')
        )
    return problems


def _checkMonitor(names: _Names) -> list[ConfigError]:
    """
    Each target's round fits in its interval, and no target is given twice
    (its results would be one series).
    """
    monitor = names.config.monitor
    problems = []
    seen: set[str] = set()
    for index, target in enumerate(monitor.targets, 1):
        if target.text in seen:
            problems.append(names.error("monitor.targets", target.text, "given twice", item=index))
        seen.add(target.text)
        count = target.count if target.count is not None else monitor.count
        spacing = target.spacing if target.spacing is not None else monitor.spacing
        timeout = target.timeout if target.timeout is not None else monitor.timeout
        interval = target.interval if target.interval is not None else monitor.interval
        needed = (count - 1) * spacing + timeout
        if needed > interval:
            problems.append(
                names.error(
                    "monitor.targets",
                    target.text,
                    f"a round takes up to {needed:g} s ((count - 1) x spacing + timeout), "
                    f"more than its interval of {interval:g} s",
                    item=index,
                )
            )
        if len(problems) > MAX_PROBLEMS:
            break
    return problems


def loads(text: str, source: str | None = None) -> Config:
    """
    Parse and validate TOML text.

    @param source: the file name used in error messages.
    """
    where = source or "<config>"
    _screen(text, where)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # The position is only in the text: "Invalid value (at line 3, column 9)".
        message = str(e)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if match:
            problem = f"invalid TOML at column {match.group(2)}: {message[: match.start()]}"
            raise ConfigError(problem, source=where, line=int(match.group(1))) from None
        match = re.search(r"\s*\(at end of document\)$", message)
        if match:
            problem = f"invalid TOML at the end of the file: {message[: match.start()]}"
            lastLine = max(1, len(text.rstrip().splitlines()))
            raise ConfigError(problem, source=where, line=lastLine) from None
        raise ConfigError(f"invalid TOML: {message}", source=where) from None
    except (RecursionError, ValueError, MemoryError) as e:
        # Not reached by anything the screen above lets through; kept so that
        # no input can end in a traceback.
        raise ConfigError(f"cannot be read: {type(e).__name__}: {e}", source=where) from None
    return _fromTables(document, where, source, _Lines(text))


def _fromTables(
    document: Mapping[str, object], where: str, source: str | None, lines: _Lines
) -> Config:
    """
    The configuration the tables of a parsed document give (a TOML file's, or
    the JSON document of L{echod.config.document}), each key checked on its
    own, then the rules across keys.

    @param where: how errors name the document.
    @param source: the L{Config.source} of the result.
    @raise ConfigError: with every problem, in file order.
    """
    sections: dict[str, object] = {}
    tables = {s.table: s for s in _SECTIONS}
    problems: list[ConfigError] = []
    for name, values in document.items():
        if name not in tables:
            hint = len(problems) < MAX_PROBLEMS
            problems.append(
                ConfigError(
                    f"unknown table [{oneLine(name, _SHOW_KEY)}] "
                    f"({_suggest(name, list(tables), hint)})",
                    source=where,
                    line=lines.of(name),
                )
            )
        elif not isinstance(values, dict):
            problems.append(
                ConfigError(
                    f"expected a table [{name}], not a value",
                    source=where,
                    line=lines.of(name),
                    key=name,
                    value=values,
                )
            )
        else:
            try:
                sections[name] = _build(tables[name], values, where, lines)
            except ConfigError as e:
                problems.extend(e.problems)
    if problems:
        # Each key on its own; the rules across keys need them all valid.
        raise ConfigError.combine(_inFileOrder(problems))
    return _check(Config(source=source, **sections), lines)  # type: ignore[arg-type]


def load(path: str | None) -> Config:
    """
    Read and validate the file at C{path}; L{None} gives the embedded defaults.
    """
    if path is None:
        return Config()
    try:
        data = readRegularFile(path, MAX_CONFIG_BYTES)
    except FileProblem as e:
        raise ConfigError(f"cannot read the config file: {e}", source=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", source=path) from None
    return loads(text, os.fspath(path))


def override(
    config: Config,
    table: str,
    values: Mapping[str, object],
    origin: str,
    spellings: Mapping[str, tuple[str, str | None]] | None = None,
) -> Config:
    """
    Replace keys of one table with values given elsewhere (the command line),
    validated the same way; errors name C{origin}, the option as the user
    typed it (such as C{"--listen"} or C{"-W"}).

    @param spellings: the options of the command, by key (C{"sniff.rotate_bytes"}:
        C{("--rotate-bytes", "-C")}), for errors that name a key the user did
        not give.
    """
    section = next(s for s in _SECTIONS if s.table == table)
    current = getattr(config, table)
    updated = _build(section, values, None, _Lines(""), base=current, origin=origin)
    given = {**config.given, **{f"{table}.{key}": origin for key in values}}
    return _check(
        dataclasses.replace(
            config,
            given=given,
            spellings={**config.spellings, **(spellings or {})},
            **{table: updated},
        )
    )


def errorAbout(config: Config, table: str, key: str, value: object, problem: str) -> ConfigError:
    """
    A L{ConfigError} about C{table.key} of a loaded configuration, named the
    way the user gave it: by its option if the command line set it, else by
    the file, the line where the file says it (when it does) and the key.
    """
    return _Names(config).error(f"{table}.{key}", value, problem)


def errorAt(config: Config, table: str, key: str, value: object, problem: str) -> ConfigError:
    """
    A L{ConfigError} about C{table.key} of a loaded configuration, with the
    line where the file says it (when it does).
    """
    error = _Names(config).error(f"{table}.{key}", value, problem)
    if error.source is None and config.given.get(f"{table}.{key}") is None:
        error.source = "command line"
    return error


def isSet(config: Config, table: str, key: str) -> bool:
    """
    Whether C{table.key} was given, on the command line or in the file,
    rather than left to its default (even if given the default's value).
    """
    if f"{table}.{key}" in config.given:
        return True
    return config.source is not None and _Names(config).lines().of(table, key) is not None


def checkInheritedSockets(config: Config) -> None:
    """
    A C{systemd:} listener names a socket that exists only in the process
    systemd starts: check, where echod starts, that it was passed.
    """
    from twisted.internet.endpoints import serverFromString

    for index, description in enumerate(config.server.listen, 1):
        kind, _, kwargs = endpointParameters(description)
        if kind != "systemd":
            continue
        try:
            serverFromString(_NoReactor(), description)
        except (KeyError, IndexError):
            which = kwargs.get("name") or f"number {kwargs.get('index')}"
            raise ConfigError(
                f"systemd passed no socket {which!s} (see LISTEN_FDNAMES and the "
                ".socket unit's FileDescriptorName=)",
                source=config.source or "command line",
                key=f"server.listen[{index}]",
                value=description,
            ) from None
        except Exception as e:
            raise ConfigError(
                f"not a usable systemd socket: {e}",
                source=config.source or "command line",
                key=f"server.listen[{index}]",
                value=description,
            ) from None
