"""
Raw packet capture read by the reactor: open, filter, decode, write.

The sniffer stands alone: it imports nothing of the echo server.

  - L{echod.sniff.source}: what a capture source is (L{IPacketSource}), what
    is asked of it and said about it, its errors
  - L{echod.sniff.linux}: the Linux source (C{AF_PACKET}, a TPACKET_V3 ring
    or C{recvmsg})
  - L{echod.sniff.windows}: the Windows source (C{SIO_RCVALL})
  - L{echod.sniff.platforms}: which source this platform opens
  - L{echod.sniff.bpf}: tcpdump filters compiled by libpcap, for the kernel
  - L{echod.sniff.reader}: the reactor's reader of a source (L{RawReader})
  - L{echod.sniff.decode}: one line of summary per packet, whatever its bytes
  - L{echod.sniff.sinks}: text, JSON and pcap outputs, with rotation
  - L{echod.sniff.pcapng}: the pcapng output
  - L{echod.sniff.capturefile}: reading pcap and pcapng files (C{-r})
  - L{echod.sniff.service}: the sniffer as a Twisted service
"""

__all__: list[str] = []
