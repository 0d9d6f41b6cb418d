"""
Packaging is declared in setup.cfg; this file lets older tools build too.
"""

from setuptools import setup

setup()
