"""
echod's C helper (echod/server/_inplace.c): the in-place echo of the fast TCP
transport, and the batched UDP echo.
"""

READ_SIZE: int
MAX_CAPACITY: int

def echo(fd: int, /) -> int | tuple[int, bytes]: ...

class DatagramBatch:
    def __init__(self, fd: int, capacity: int) -> None: ...
    def receive(self) -> list[tuple[str, int, int]]: ...
    def send(self, verdicts: bytes | bytearray, /) -> list[tuple[int, int]] | tuple[()]: ...
