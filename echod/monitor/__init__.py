"""
The monitor (C{twistd echod-monitor}): echo servers probed on a schedule,
forever, every address of each name on its own, exported to Prometheus and
drawn on a status page.

  - L{echod.monitor.targets}: what is probed, with its settings
  - L{echod.monitor.history}: bounded rings of round summaries per address
  - L{echod.monitor.probes}: resolving a name, and one round against one
    address, by the client's own protocols
  - L{echod.monitor.schedule}: rounds spread over the interval, bounded
    concurrency, the state of every target address
  - L{echod.monitor.collector}: the Prometheus metrics of that state
  - L{echod.monitor.page}: the status page
  - L{echod.monitor.service}: the service, its listener and its reload
"""

__all__: list[str] = []
