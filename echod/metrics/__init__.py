"""
Prometheus metrics and the health check, served by twisted.web.

  - L{echod.metrics.collector}: what a scrape reports (L{EchodCollector},
    echod's registry) and the C{/metrics} and C{/healthz} resources
  - L{echod.metrics.listener}: the bounded HTTP listener serving them
    (L{MetricsSite}, L{MetricsChannel}) and its service (L{MetricsService})
"""

__all__: list[str] = []
