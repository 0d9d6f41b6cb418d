"""
Prometheus metrics and the health check, served by twisted.web: the
collector, its resources and the bounded HTTP listener, in
L{echod.metrics.collector} (to be split).
"""

__all__: list[str] = []
