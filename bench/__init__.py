"""
echod's benchmarks, run from the checkout (never installed: setup.cfg does not
list this package).

    python -m bench.run          # every scenario against echod and its peers
    python -m bench.workers      # worker scaling, each serving process on a CPU budget
    python -m bench.sniff.run    # echod-sniff against tcpdump on the same flood

run is the harness (building the native load generators and reference servers,
starting and checking servers, measuring, reporting); workers uses it.  udp
holds the UDP scenarios' own parts (echod's UDP config, the UDP check, the UDP
load generator's command line), which run and workers use.  peers holds the
servers echod is compared with, run as scripts in subprocesses; loadgen.c and
udpgen.c are the native TCP and UDP load generators, sniff the capture-rate
benchmark.
"""
