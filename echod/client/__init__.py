"""
The echo client: what a run will do, connecting (Happy Eyeballs), the
protocols that send and check the echo, statistics and the report.  Command
lines are parsed in L{echod.tap.client}; nothing here imports the tap or the
server.
"""

__all__: list[str] = []
