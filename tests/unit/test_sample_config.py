"""
The sample file in etc/ documents every key with its default, and is valid.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from echod import config

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "echod.toml"


def tomlValue(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple):
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            low, high = value
            return str(low) if low == high else f'"{low}-{high}"'
        return "[" + ", ".join(tomlValue(v) for v in value) + "]"
    return str(value)


class SampleConfigTests:
    def test_sampleIsValid(self) -> None:
        """
        The sample loads without error.
        """
        config.load(str(SAMPLE))

    def test_everyKeyDocumentedWithDefault(self) -> None:
        """
        Each key of each table appears in its table as C{key = default}
        (commented out or not), after a comment line describing it.
        """
        text = SAMPLE.read_text()
        tables = re.split(r"^\[(\w+)\]\s*$", text, flags=re.M)
        bodies = dict(zip(tables[1::2], tables[2::2], strict=True))
        for section in config.sections():
            body = bodies.get(section.table)
            assert body is not None, f"[{section.table}] missing from {SAMPLE}"
            for f in dataclasses.fields(section):
                default = tomlValue(f.default)
                pattern = rf"^#\s*{f.name} = (.*)$"
                match = re.search(pattern, body, flags=re.M)
                assert match, f"{section.table}.{f.name} is not in the sample"
                written = match.group(1).replace(" ", "")
                assert written == default.replace(" ", ""), (
                    f"{section.table}.{f.name}: sample says {match.group(1)}, default is {default}"
                )
