"""
echod tests.
"""
