"""
The in-place echo of echod's fast TCP transport, in C (echod/_inplace.c).
"""

READ_SIZE: int

def echo(fd: int, /) -> int | tuple[int, bytes]: ...
