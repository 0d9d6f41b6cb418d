"""
Packaging is declared in setup.cfg; this file adds echod's optional C helper
(the in-place echo of the fast TCP transport, Linux only), and lets older
tools build too.  Without a C compiler or Python's headers the helper is
skipped and echo connections echo through the immediate write instead.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension("echod.server._inplace", ["echod/server/_inplace.c"], optional=True)
    )

setup(ext_modules=extensions)
