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
    from importlib import import_module

    import twisted

    # The modules of echod's C helper: the echo server's and the sniffer's.
    modules = ("echod.server._inplace", "echod.sniff._ringwalk")
    missing = []
    for module in modules:
        try:
            import_module(module)
        except ImportError:
            missing.append(module)
    if not missing:
        helper = "built"
    elif len(missing) == len(modules):
        helper = "not built"
    else:
        helper = f"partly built (without {', '.join(missing)})"
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
