"""
The capture-rate benchmark: ``python -m bench.sniff.run``.
"""
