# -*- test-case-name: tests.unit.test_client -*-
"""
The byte pattern bulk mode streams, and its verifier: any piece of the
stream can be made, or checked against what came back, without holding the
whole.
"""

from __future__ import annotations

import random

from echod.client.report import describeDifference

__all__ = ["BULK_CHUNK", "BulkPattern"]

# Bytes written per call.
BULK_CHUNK = 64 * 1024
_BULK_SEED = 862


class BulkPattern:
    """
    The bytes bulk mode streams: chunk C{k} is C{k} as 8 bytes, big-endian,
    then a fixed block from a seeded PRNG.  Deterministic, cheap to make and
    to check piece by piece, and no two chunks alike, so a lost, repeated or
    reordered chunk is caught too.
    """

    def __init__(self, total: int, chunkSize: int = BULK_CHUNK, seed: int = _BULK_SEED) -> None:
        if chunkSize <= 8:
            raise ValueError("chunkSize must be larger than 8")
        self.total = total
        self.chunkSize = chunkSize
        self._body = random.Random(seed).randbytes(chunkSize - 8)
        self._cache: tuple[int, bytes] = (-1, b"")

    def chunk(self, index: int) -> bytes:
        cachedIndex, cached = self._cache
        if cachedIndex == index:
            return cached
        data = index.to_bytes(8, "big") + self._body
        end = self.total - index * self.chunkSize
        if end < self.chunkSize:
            data = data[: max(0, end)]
        self._cache = (index, data)
        return data

    def slice(self, offset: int, length: int) -> bytes:
        """
        The C{length} bytes (at most to the end of the chunk) at C{offset}.
        """
        index, start = divmod(offset, self.chunkSize)
        return self.chunk(index)[start : start + length]

    def mismatch(self, offset: int, data: bytes) -> str | None:
        """
        L{None} if C{data} is what the stream holds at C{offset}, else where
        and how it first differs.
        """
        position = 0
        while position < len(data):
            index, start = divmod(offset + position, self.chunkSize)
            chunk = self.chunk(index)
            take = min(len(chunk) - start, len(data) - position)
            if take <= 0:
                return f"{len(data) - position} bytes more than were sent"
            if not data.startswith(chunk[start : start + take], position):
                piece = data[position : position + take]
                expected = chunk[start : start + take]
                i = next(i for i in range(take) if piece[i] != expected[i])
                return describeDifference(
                    expected[i : i + 1], piece[i : i + 1], offset + position + i
                )
            position += take
        return None
