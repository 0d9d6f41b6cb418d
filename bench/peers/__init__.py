"""
The servers echod is measured against, each run as a script in a subprocess
by bench.run.
"""
