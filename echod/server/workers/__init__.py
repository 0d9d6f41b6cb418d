"""
C{[server] workers = N}: the supervisor in the main process
(L{echod.server.workers.supervisor}), the C{SO_REUSEPORT} sockets it opens for
each worker (L{echod.server.workers.sockets}), the child each worker runs
(L{echod.server.workers.child}), and the wire between them
(L{echod.server.workers.wire}).
"""
