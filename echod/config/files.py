# -*- test-case-name: tests.unit.test_hostile_config -*-
"""
Reading a file the user named (the config file, a key or a certificate)
only if it is a regular file of bounded size: a FIFO would block, a device
never end.
"""

from __future__ import annotations

import os
import stat

__all__ = ["FileProblem", "readRegularFile"]


class FileProblem(ValueError):
    """
    A named file echod will not read: missing, unreadable, not a regular file
    (a FIFO would block, a device never end), or too large.
    """


def _fileKind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _openRegular(path: str, limit: int) -> int:
    """
    Open C{path} for reading only if it is a regular file of at most C{limit}
    bytes, without blocking on a FIFO or touching a device: it is looked at
    first, opened non-blocking, and looked at again through the descriptor.
    """
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        else:
            fd = -1
    except OSError as e:
        raise FileProblem(e.strerror or str(e)) from None
    except ValueError:
        raise FileProblem("not a possible file name (a NUL character?)") from None
    if fd < 0:
        raise FileProblem(f"it is {_fileKind(os.stat(path).st_mode)}, not a regular file")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"it is {_fileKind(info.st_mode)}, not a regular file")
        raise FileProblem(f"it is larger than {_size(limit)} ({info.st_size} bytes)")
    return fd


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


def readRegularFile(path: str, limit: int) -> bytes:
    """
    The contents of C{path}, if it is a regular file of at most C{limit}
    bytes (a file that grows while it is read is cut off at C{limit + 1}).

    @raise FileProblem: otherwise; the text says why, without the name.
    """
    fd = _openRegular(path, limit)
    chunks, total = [], 0
    try:
        # os.read on the non-blocking descriptor: a "regular" file that has
        # nothing to give (/proc/kmsg) says so instead of blocking.
        while total <= limit:
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except BlockingIOError:
        raise FileProblem("reading it would block") from None
    except OSError as e:
        raise FileProblem(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if total > limit:
        raise FileProblem(f"it is larger than {_size(limit)}")
    return b"".join(chunks)
