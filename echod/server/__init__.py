"""
The echo server of RFC 862: stream and datagram echo, its limits and guards,
the PROXY protocol parser, its listeners, the fast paths (the only place that
touches Twisted's private parts, gated by version) and the worker processes.
Nothing here imports the client, the sniffer or the root service.
"""
