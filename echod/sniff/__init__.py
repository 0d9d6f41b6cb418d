"""
Raw packet capture read by the reactor: open, filter, decode, write.
"""

__all__: list[str] = []
