"""
A real C{twistd -n --pidfile= echod-monitor --config FILE} against a real
echod: the metrics scraped and parsed, the status page and the health
check; targets up, refused and unresolvable; a name with both families of
which only IPv4 answers (a private hosts file in a mount namespace); UDP
through random loss and hosts down (nftables in network namespaces of the
test's own); reload (SIGHUP) keeping the history of targets still listed,
a bad reload keeping the running list, and a clean stop (SIGTERM, exit 0);
README's alert rules checked and tested with promtool; the systemd unit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.e2e.test_systemd import ETC, INSTALLED_TWISTD, directives
from tests.environment import freePort, requireIPv6, requireRoot, requireTool
from tests.testing import Samples, get, scrape, value

pytestmark = pytest.mark.e2e

UNLIMITED = (
    "source_packets_per_second = 0\nglobal_packets_per_second = 0\n"
    "source_bytes_per_second = 0\nglobal_bytes_per_second = 0\n"
)


def echodConfig(port: int, ipv6: bool = True) -> str:
    listen = [f"tcp:port={port}:interface=127.0.0.1"]
    if ipv6:
        listen.append(rf"tcp6:port={port}:interface=\\:\\:1")
    return (
        "[server]\nlisten = ["
        + ", ".join(f'"{item}"' for item in listen)
        + f']\n[udp]\nlisten = ["udp:port={port}:interface=127.0.0.1"]\n'
        + UNLIMITED
    )


def monitorConfig(listen: int, targets: list[str], **settings: object) -> str:
    values = {"interval": 1, "timeout": 0.5, "count": 3, "spacing": 0.05, **settings}
    lines = ["[monitor]", f'listen = "tcp:port={listen}:interface=127.0.0.1"']
    lines += [f"{key} = {value}" for key, value in values.items()]
    # A target written as a table ("{ target = ... }") goes in as it is.
    items = (t if t.startswith("{") else f"'{t}'" for t in targets)
    lines.append("targets = [" + ", ".join(items) + "]")
    return "\n".join(lines) + "\n"


def scrapeUntil(port: int, ready: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def success(samples: Samples, target: str, address: str, family: str, protocol: str) -> float:
    return value(
        samples,
        "echod_probe_success",
        target=target,
        address=address,
        family=family,
        protocol=protocol,
    )


def rounds(samples: Samples, target: str, address: str, family: str, protocol: str) -> float:
    return value(
        samples,
        "echod_probe_rounds_total",
        target=target,
        address=address,
        family=family,
        protocol=protocol,
        result="success",
    )


@pytest.fixture(scope="module")
def echod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """
    echod on 127.0.0.1 and ::1 (TCP) and 127.0.0.1 (UDP), one port.
    """
    requireIPv6()
    directory = tmp_path_factory.mktemp("echod")
    port = freePort()
    config = directory / "echod.toml"
    config.write_text(echodConfig(port))
    with Twistd(directory, ["--config", str(config)]) as daemon:
        daemon.listeningPorts(3)
        yield port


def test_monitorReloadAndStop(echod: int, tmp_path: Path) -> None:
    """
    Targets up (TCP over IPv4 and IPv6, UDP), refused and unresolvable show
    in the metrics and on the page; a reload keeps the counters of the
    targets that did not change, drops the removed one and adds the new;
    a bad file keeps the running list; SIGTERM exits 0 without a traceback.
    """
    closed = freePort()
    listen = freePort()
    v4, v6, udp = f"127.0.0.1:{echod}", f"[::1]:{echod}", f"udp://127.0.0.1:{echod}"
    refused, unresolvable = f"127.0.0.1:{closed}", "echo.invalid:7"
    config = tmp_path / "monitor.toml"
    config.write_text(monitorConfig(listen, [v4, v6, udp, refused, unresolvable]))
    with Twistd(tmp_path, ["--config", str(config)], command="echod-monitor") as daemon:
        samples = scrapeUntil(
            listen,
            lambda s: (
                rounds(s, v4, "127.0.0.1", "ipv4", "tcp") >= 2
                and rounds(s, udp, "127.0.0.1", "ipv4", "udp") >= 2
                and rounds(s, v6, "::1", "ipv6", "tcp") >= 2
            ),
        )
        assert success(samples, v4, "127.0.0.1", "ipv4", "tcp") == 1, daemon.output()
        assert success(samples, v6, "::1", "ipv6", "tcp") == 1
        assert success(samples, udp, "127.0.0.1", "ipv4", "udp") == 1
        assert success(samples, refused, "127.0.0.1", "ipv4", "tcp") == 0
        assert success(samples, unresolvable, "", "", "tcp") == 0
        failures = value(
            samples,
            "echod_probe_resolve_failures_total",
            target=unresolvable,
            address="",
            family="",
            protocol="tcp",
        )
        assert failures >= 1
        assert get(f"http://127.0.0.1:{listen}/healthz") == (200, b"ok\n")
        status, page = get(f"http://127.0.0.1:{listen}/")
        assert status == 200
        assert page.count(b"<svg") == 4
        assert b"echo.invalid: name does not resolve" in page
        assert b"connection refused by 127.0.0.1 port" in page

        before = rounds(samples, v4, "127.0.0.1", "ipv4", "tcp")
        beforeV6 = rounds(samples, v6, "::1", "ipv6", "tcp")
        added = f"localhost:{echod}"
        # [::1] with settings of its own: the same series, its history kept.
        v6Table = f"{{ target = '{v6}', count = 4 }}"
        config.write_text(monitorConfig(listen, [v4, v6Table, udp, unresolvable, added]))
        daemon.signal(signal.SIGHUP)
        daemon.waitFor(
            r"targets reloaded: 4 kept \(with their history; 1 of them with new settings\), "
            r"1 added, 1 removed"
        )
        # At once, before any new round: a series started afresh would have none.
        assert rounds(scrape(listen), v6, "::1", "ipv6", "tcp") >= beforeV6
        samples = scrapeUntil(
            listen,
            lambda s: (
                rounds(s, added, "127.0.0.1", "ipv4", "tcp") >= 1
                and rounds(s, v4, "127.0.0.1", "ipv4", "tcp") > before
                and rounds(s, v6, "::1", "ipv6", "tcp") > beforeV6
            ),
        )
        assert rounds(samples, v4, "127.0.0.1", "ipv4", "tcp") > before
        assert rounds(samples, added, "127.0.0.1", "ipv4", "tcp") >= 1
        assert success(samples, refused, "127.0.0.1", "ipv4", "tcp") == -1

        config.write_text("[monitor]\ntargets = ['echo.example:0']\n")
        daemon.signal(signal.SIGHUP)
        line = daemon.waitFor("reload failed, keeping the running configuration: .*")
        assert line.group(0).endswith(
            'monitor.targets[1] = "echo.example:0": port 0 is not from 1 to 65535'
        )
        samples = scrape(listen)
        assert success(samples, added, "127.0.0.1", "ipv4", "tcp") == 1
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    assert "Traceback" not in daemon.output()
    assert "Unhandled" not in daemon.output()


def test_badConfigIsOneLine(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("[monitor]\ntargets = ['udp://echo.example']\n")
    with Twistd(tmp_path, ["--config", str(config)], command="echod-monitor") as daemon:
        assert daemon.wait(15) == 1
    assert daemon.output().strip().splitlines() == [
        f'echod-monitor: {config}: line 2: monitor.targets[1] = "udp://echo.example": '
        "expected udp://HOST:PORT or udp://[IPV6]:PORT"
    ]


def test_oneFamilyDown(tmp_path: Path) -> None:
    """
    A name with an IPv4 and an IPv6 address (a private hosts file in a
    mount namespace; the machine's is untouched) where only IPv4 answers:
    each address has its own series, IPv4 up and IPv6 down, which the
    README's alert "IPv6 down while IPv4 is up" catches.
    """
    requireRoot()
    requireIPv6()
    unshare = requireTool("unshare")
    requireTool("mount")
    machineHosts = Path("/etc/hosts").read_bytes()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 dual.test\n::1 dual.test\n")
    port, listen = freePort(), freePort()
    (tmp_path / "echod.toml").write_text(echodConfig(port, ipv6=False))
    target = f"dual.test:{port}"
    config = tmp_path / "monitor.toml"
    config.write_text(monitorConfig(listen, [target]))
    with Twistd(tmp_path, ["--config", str(tmp_path / "echod.toml")]) as server:
        server.listeningPorts(2)
        monitor = Twistd(tmp_path / "m", ["--config", str(config)], command="echod-monitor")
        (tmp_path / "m").mkdir()
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        monitor.argv = [unshare, "-m", "sh", "-c", script, str(hosts), *monitor.argv]
        with monitor:
            samples = scrapeUntil(
                listen,
                lambda s: (
                    rounds(s, target, "127.0.0.1", "ipv4", "tcp") >= 1
                    and value(
                        s,
                        "echod_probe_rounds_total",
                        target=target,
                        address="::1",
                        family="ipv6",
                        protocol="tcp",
                        result="refused",
                    )
                    >= 1
                ),
            )
    assert success(samples, target, "127.0.0.1", "ipv4", "tcp") == 1, monitor.output()
    assert success(samples, target, "::1", "ipv6", "tcp") == 0
    # The alert of README, evaluated on this scrape:
    #   max by (target) (echod_probe_success{family="ipv4"}) == 1
    #   and min by (target) (echod_probe_success{family="ipv6"}) == 0
    byFamily: dict[str, list[float]] = {}
    for (name, labels), sample in samples.items():
        found = dict(labels)
        if name == "echod_probe_success" and found["target"] == target:
            byFamily.setdefault(found["family"], []).append(sample)
    assert max(byFamily["ipv4"]) == 1 and min(byFamily["ipv6"]) == 0
    assert Path("/etc/hosts").read_bytes() == machineHosts


def test_udpThroughRandomLoss(tmp_path: Path) -> None:
    """
    In a network namespace of our own, nftables drops 20 % of UDP
    datagrams in the input hook (on lo a round trip passes it twice: 36 %
    lost): the monitor's rounds show a loss strictly between 0 and 1, and
    the target stays up.
    """
    requireRoot()
    ip = requireTool("ip")
    nft = requireTool("nft")
    namespace = f"echod-monitor-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True)
    try:
        inside = [ip, "netns", "exec", namespace]
        subprocess.run([*inside, ip, "link", "set", "lo", "up"], check=True)
        for rule in (
            "add table inet echodloss",
            "add chain inet echodloss input { type filter hook input priority 0; }",
            "add rule inet echodloss input meta l4proto udp numgen random mod 100 < 20 drop",
        ):
            subprocess.run([*inside, nft, rule], check=True)
        (tmp_path / "echod.toml").write_text(echodConfig(7007, ipv6=False))
        target = "udp://127.0.0.1:7007"
        config = tmp_path / "monitor.toml"
        config.write_text(monitorConfig(9108, [target], count=40, spacing=0.01, timeout=0.3))
        server = Twistd(tmp_path, ["--config", str(tmp_path / "echod.toml")])
        server.argv = [*inside, *server.argv]
        (tmp_path / "m").mkdir()
        monitor = Twistd(tmp_path / "m", ["--config", str(config)], command="echod-monitor")
        monitor.argv = [*inside, *monitor.argv]
        with server, monitor:
            server.listeningPorts(2)
            monitor.waitFor("metrics listening on")
            scrapeInside = [
                *inside,
                sys.executable,
                "-c",
                "import urllib.request;"
                "print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())",
            ]
            deadline = time.monotonic() + 30
            loss: list[float] = []
            while time.monotonic() < deadline and len(loss) < 3:
                text = subprocess.run(
                    scrapeInside, capture_output=True, text=True, check=True
                ).stdout
                for line in text.splitlines():
                    if line.startswith("echod_probe_loss_ratio{"):
                        ratio = float(line.rsplit(" ", 1)[1])
                        if not loss or loss[-1] != ratio:
                            loss.append(ratio)
                time.sleep(0.5)
            up = [ln for ln in text.splitlines() if ln.startswith("echod_probe_success{")]
            assert 'address="127.0.0.1"' in up[0]
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False)
    assert len(loss) >= 2, monitor.output()
    assert all(0 < ratio < 1 for ratio in loss), loss
    assert up[0].endswith(" 1"), up


def test_hostsDown(tmp_path: Path) -> None:
    """
    In a network namespace of our own with nothing but lo: a host whose
    SYNs are dropped (nftables) times out connecting, and an address with
    no route at all fails at once; both are down, with why.  Nothing
    leaves the namespace: there is no route out of it.
    """
    requireRoot()
    ip = requireTool("ip")
    nft = requireTool("nft")
    namespace = f"echod-down-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True)
    try:
        inside = [ip, "netns", "exec", namespace]
        subprocess.run([*inside, ip, "link", "set", "lo", "up"], check=True)
        for rule in (
            "add table inet echoddown",
            "add chain inet echoddown input { type filter hook input priority 0; }",
            "add rule inet echoddown input tcp dport 7999 drop",
        ):
            subprocess.run([*inside, nft, rule], check=True)
        dropped, unroutable = "127.0.0.1:7999", "192.0.2.1:7"
        config = tmp_path / "monitor.toml"
        config.write_text(monitorConfig(9108, [dropped, unroutable]))
        monitor = Twistd(tmp_path, ["--config", str(config)], command="echod-monitor")
        monitor.argv = [*inside, *monitor.argv]
        scrapeInside = [
            *inside,
            sys.executable,
            "-c",
            "import urllib.request;"
            "print(urllib.request.urlopen('http://127.0.0.1:9108/').read().decode())",
        ]
        with monitor:
            monitor.waitFor("metrics listening on")
            monitor.waitFor(r"127.0.0.1:7999 \(127.0.0.1\) is down")
            monitor.waitFor(r"192.0.2.1:7 \(192.0.2.1\) is down")
            page = subprocess.run(scrapeInside, capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False)
    assert "could not connect to 127.0.0.1 port 7999 within 0.5 s" in page, page
    assert "cannot connect to 192.0.2.1 port 7: network is unreachable" in page, page
    assert page.count('class="down"') == 2


def test_unitHasNoPrivilege() -> None:
    """
    The unit runs echod-monitor the systemd way (notify, no fork, reload
    by SIGHUP) without any capability; systemd-analyze checks the rest
    (tests.e2e.test_systemd).
    """
    found = directives(ETC / "echod-monitor.service")
    assert found["Type"] == ["notify"]
    (execStart,) = found["ExecStart"]
    assert execStart.startswith(f"{INSTALLED_TWISTD} --nodaemon --pidfile= echod-monitor ")
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert found["CapabilityBoundingSet"] == [""]
    assert found["AmbientCapabilities"] == [""]
    for key, setting in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
    ]:
        assert setting in found[key], key


PROMTOOL_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'echod_probe_success{target="dual.example:7",address="192.0.2.7",family="ipv4"}'
        values: '1x30'
      - series: 'echod_probe_success{target="dual.example:7",address="2001:db8::7",family="ipv6"}'
        values: '1 1 0x28'
      - series: 'echod_probe_success{target="gone.example:7",address="192.0.2.8",family="ipv4"}'
        values: '1 0x29'
      - series: 'echod_probe_success{target="fine.example:7",address="192.0.2.9",family="ipv4"}'
        values: '1x30'
      - series: 'echod_probe_loss_ratio{target="lossy.example:7",address="192.0.2.10"}'
        values: '0.2x30'
      - series: 'echod_probe_loss_ratio{target="fine.example:7",address="192.0.2.9"}'
        values: '0x30'
      - series: 'echod_probe_rounds_total{target="fine.example:7",result="overrun"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: EchoIPv6DownWhileIPv4Up
        exp_alerts:
          - exp_labels: {severity: warning, target: "dual.example:7"}
            exp_annotations:
              summary: "dual.example:7 answers over IPv4 but not over IPv6"
      - eval_time: 20m
        alertname: EchoTargetDown
        exp_alerts:
          - exp_labels: {severity: critical, target: "gone.example:7"}
            exp_annotations:
              summary: "gone.example:7 answers on none of its addresses"
      - eval_time: 25m
        alertname: EchoLoss
        exp_alerts:
          - exp_labels: {severity: warning, target: "lossy.example:7", address: "192.0.2.10"}
            exp_annotations:
              summary: "lossy.example:7 (192.0.2.10) loses 20%"
      - eval_time: 25m
        alertname: EchoMonitorOverrun
        exp_alerts: []
"""


def test_readmeAlertRules(tmp_path: Path) -> None:
    """
    README's alert rules are valid for Prometheus, and fire where they
    should: IPv6 down while IPv4 is up, a target down on every address,
    loss over 5 %; not for a target that answers.
    """
    promtool = requireTool("promtool")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## The monitor") :]
    start = section.index("```yaml\ngroups:\n") + len("```yaml\n")
    rules = section[start : section.index("```", start)]
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    checked = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
