"""
C{[server] workers = N}: the supervisor in the main process, the child each
worker runs, and the wire between them.
"""
