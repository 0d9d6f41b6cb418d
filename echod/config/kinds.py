# -*- test-case-name: tests.unit.test_config -*-
"""
The validators of config values: each takes the raw TOML value and returns
the final one or raises L{_Invalid} saying what is allowed.  Nothing is
coerced across types: an integer may stand for a float, nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from echod.config.errors import _Invalid

__all__: list[str] = []

T = TypeVar("T")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class _Kind(Generic[T]):
    def __call__(self, value: object) -> T:
        raise NotImplementedError

    def toTOML(self, value: T) -> object:
        """
        C{value}, a result of this validator, as TOML writes it: what the
        validator takes back to give C{value} again.
        """
        return value


class _Int(_Kind[int]):
    def __init__(self, low: int, high: int, unit: str = "") -> None:
        self.low, self.high, self.unit = low, high, unit

    def __call__(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(self.allowed())
        if not self.low <= value <= self.high:
            raise _Invalid(self.allowed())
        return value

    def allowed(self) -> str:
        return f"expected an integer{self.unit} from {self.low} to {self.high}"


class _Float(_Kind[float]):
    """
    A number from C{low} to C{high}; with C{zeroOr}, 0 (off) or a number
    from C{low} (an interval that small would be a busy loop).
    """

    def __init__(self, low: float, high: float, unit: str = "", zeroOr: bool = False) -> None:
        self.low, self.high, self.unit, self.zeroOr = low, high, unit, zeroOr

    def __call__(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(self.allowed())
        if isinstance(value, int) and not -(2**64) < value < 2**64:
            raise _Invalid(self.allowed())
        number = float(value)
        if self.zeroOr and number == 0:
            return number
        if math.isnan(number) or not self.low <= number <= self.high:
            raise _Invalid(self.allowed())
        return number

    def allowed(self) -> str:
        zero = ": 0, or" if self.zeroOr else ""
        return (
            f"expected a number{self.unit}{zero} from {_number(self.low)} to {_number(self.high)}"
        )


class _Bool(_Kind[bool]):
    def __call__(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false")
        return value


class _Str(_Kind[str]):
    def __init__(
        self,
        choices: Sequence[str] = (),
        check: Callable[[str], str] | None = None,
        what: str = "a string",
    ) -> None:
        self.choices, self.check, self.what = tuple(choices), check, what

    def __call__(self, value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected {self.allowed()}")
        if self.choices and value not in self.choices:
            raise _Invalid(f"expected {self.allowed()}")
        return self.check(value) if self.check else value

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        return self.what


class _List(_Kind[tuple[T, ...]]):
    def __init__(self, item: _Kind[T], what: str, maxItems: int = 1024) -> None:
        self.item, self.what, self.maxItems = item, what, maxItems

    def __call__(self, value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list of {self.what}")
        if len(value) > self.maxItems:
            raise _Invalid(f"expected at most {self.maxItems} items")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(self.item(item))
            except _Invalid as e:
                raise _Invalid(str(e), index + 1, item) from None
        return tuple(result)

    def toTOML(self, value: tuple[T, ...]) -> list[object]:
        return [self.item.toTOML(item) for item in value]


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Invalid(
            "expected a network in CIDR notation, such as 192.0.2.0/24 or 2001:db8::/32"
        ) from None
    raise _Invalid(f"host bits are set; the network is {loose}")


def _portRange(value: object) -> tuple[int, int]:
    """
    A port (C{53}) or an inclusive range written as a string (C{"0-1023"}).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return (value, value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", value)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if low <= high <= 65535:
                return (low, high)
    raise _Invalid('expected a port from 0 to 65535 or a range such as "0-1023"')


class _PortRange(_Kind[tuple[int, int]]):
    def __call__(self, value: object) -> tuple[int, int]:
        return _portRange(value)

    def toTOML(self, value: tuple[int, int]) -> object:
        low, high = value
        return low if low == high else f"{low}-{high}"
