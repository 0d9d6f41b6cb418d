"""
echod: an RFC 862 echo service, its client and a packet sniffer, as twistd plugins.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
