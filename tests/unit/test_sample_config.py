"""
The sample file in etc/ documents every key with its default, and is valid.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from echod import config

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "echod.toml"


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
                pattern = rf"^#\s*{f.name} = (.*)$"
                match = re.search(pattern, body, flags=re.M)
                assert match, f"{section.table}.{f.name} is not in the sample"
                written = tomllib.loads(f"value = {match.group(1)}")["value"]
                # Through the key's own validator: 1 and 1.0 are one duration.
                value = f.metadata["kind"](written)
                assert value == f.default, (
                    f"{section.table}.{f.name}: sample says {match.group(1)}, "
                    f"default is {f.default!r}"
                )
                before = body[: match.start()].rstrip().splitlines()
                assert before and before[-1].startswith("#"), (
                    f"{section.table}.{f.name} has no comment describing it"
                )
