"""
One module per twistd command: each exports C{Options} and C{makeService}.
"""

__all__: list[str] = []
