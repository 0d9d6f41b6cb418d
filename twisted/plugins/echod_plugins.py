"""
echod's twistd plugins.  Kept to one import and the ServiceMaker objects: a plugin file
that fails to import makes twistd answer "Unknown command".
"""

from twisted.application.service import ServiceMaker

echod = ServiceMaker(
    "echod",
    "echod.tap.server",
    "RFC 862 echo service: TCP, UDP, TLS, Unix, PROXY",
    "echod",
)
echodClient = ServiceMaker(
    "echod-client",
    "echod.tap.client",
    "Echo client: Happy Eyeballs, verify, RTT",
    "echod-client",
)
echodSniff = ServiceMaker(
    "echod-sniff",
    "echod.tap.sniff",
    "Packet sniffer: tcpdump filters, text/JSON/pcap/pcapng",
    "echod-sniff",
)
echodMonitor = ServiceMaker(
    "echod-monitor",
    "echod.tap.monitor",
    "Echo monitor: every address, Prometheus, status page",
    "echod-monitor",
)
