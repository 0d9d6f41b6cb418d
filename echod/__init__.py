"""
echod: an RFC 862 echo service, its client and a packet sniffer, as twistd plugins.
"""

__all__ = ["__version__", "versionLine"]

__version__ = "0.1.0"


def versionLine() -> str:
    """
    What every command's C{--version} prints: echod's version, Twisted's and
    Python's, whether echod's C helper was built and, when they are off here,
    why the fast paths are.  It reads the installation that runs, wherever
    the command is started from.  Imports happen here, not when C{echod} is
    imported: every module imports this package.
    """
    import platform
    import sys

    import twisted

    try:
        import echod.server._inplace  # noqa: F401
    except ImportError:
        helper = "not built"
    else:
        helper = "built"
    try:
        from echod.server.fastpath import unsupportedReason
    except ImportError:  # no epoll
        off: str | None = f"no epoll on {sys.platform}"
    else:
        off = unsupportedReason()
    parts = [
        f"Twisted {twisted.__version__}",
        f"Python {platform.python_version()} {platform.python_implementation()}",
        f"C helper: {helper}",
    ]
    if off is not None:
        parts.append(f"fast paths: off ({off})")
    return f"echod {__version__} ({', '.join(parts)})"
