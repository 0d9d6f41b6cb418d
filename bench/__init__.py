"""
echod's benchmarks, run from the checkout (never installed: setup.cfg does not
list this package).

    python -m bench.run          # every scenario against echod and its peers
    python -m bench.workers      # worker scaling, each serving process on a CPU budget
    python -m bench.sniff.run    # echod-sniff against tcpdump on the same flood

run is the harness (building the native load generator and reference server,
starting and checking servers, measuring, reporting); workers uses it.  peers
holds the servers echod is compared with, run as scripts in subprocesses;
loadgen.c is the native load generator, sniff the capture-rate benchmark.
"""
