"""
README.md stays true: its test command is the one CI runs, and its config
reference is the schema's.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from echod import config
from echod.monitor.collector import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple):
        items = []
        for item in value:
            if isinstance(item, tuple):
                low, high = item
                items.append(str(low) if low == high else f'"{low}-{high}"')
            else:
                items.append(_show(item))
        return "[" + ", ".join(items) + "]"
    return str(value)


def reference() -> str:
    """
    The configuration reference as README.md must show it.
    """
    lines = []
    for section in config.sections():
        lines += [f"#### `[{section.table}]`", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(section):
            default = _show(f.default).replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{default}` | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)


class ReadmeTests:
    def test_twoSetupCommandsFirst(self) -> None:
        """
        The first two commands: install and run the daemon; install and run
        the tests.
        """
        commands = re.findall(r"^    (python3 -m venv .*)$", README, flags=re.M)
        assert "twistd -n --pidfile= echod" in commands[0]
        assert "pytest" in commands[1]

    def test_ciRunsTheReadmeTestCommand(self) -> None:
        command = re.findall(r"^    (python3 -m venv .*)$", README, flags=re.M)[1]
        ci = (ROOT / ".ci" / "run").read_text().splitlines()
        assert command in ci, f".ci/run does not run {command!r}"

    def test_configReferenceMatchesSchema(self) -> None:
        expected = reference()
        assert expected in README, (
            "README's configuration reference is stale; expected:\n" + expected
        )

    def test_metricsTableNamesEveryMetric(self) -> None:
        """
        README's metrics table has a row for every family echod's collector
        can yield (as the scraper sees it: counters end in _total), and no
        row for one it does not.
        """
        source = (ROOT / "echod" / "metrics" / "collector.py").read_text()
        suffixes = {"Counter": "_total", "Gauge": "", "Info": "_info"}
        exported = {
            name + suffixes[kind]
            for kind, name in re.findall(r'(Counter|Gauge|Info)MetricFamily\(\s*"(\w+)"', source)
        }
        exported |= set(FAMILIES)  # the monitor's (echod.monitor.collector)
        documented = set(re.findall(r"^\| `(echod_\w+)", README, flags=re.M))
        assert exported - documented == set(), "not in README's metrics table"
        assert documented - exported == set(), "in README's metrics table, not exported"

    def test_foregroundExamplesNameNoPidfile(self) -> None:
        """
        Every foreground twistd example says --pidfile=: without it, a
        second twistd in the same folder stops at "Another twistd server is
        running".
        """
        for line in README.splitlines():
            if re.search(r"twistd (-n|--nodaemon)\b", line):
                assert "--pidfile=" in line, line

    def test_sampleConfigPathIsREADMEs(self) -> None:
        """
        The sample file tells users to check it where README installs it.
        """
        sample = (ROOT / "etc" / "echod.toml").read_text()
        (path,) = re.findall(r"echod check-config (\S+)", sample)
        assert f"check-config {path}" in README
