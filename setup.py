"""
Packaging is declared in setup.cfg; this file adds echod's optional C helper
(the in-place echo of the fast TCP transport, and the sniffer's walk of its
capture ring; Linux only), and lets older tools build too.  Without a C
compiler or Python's headers the helper is skipped: echo connections echo
through the immediate write, and the sniffer walks its ring in Python.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension("echod.server._inplace", ["echod/server/_inplace.c"], optional=True)
    )
    extensions.append(
        Extension("echod.sniff._ringwalk", ["echod/sniff/_ringwalk.c"], optional=True)
    )

setup(ext_modules=extensions)
