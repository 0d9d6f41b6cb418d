"""
Tests for L{echod.tap.client}: the options shared by C{echod-client} and
C{twistd echod-client}, and the service it makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from echod.client.connect import endpointFor
from echod.client.protocols import EchoClientFactory
from echod.client.service import EchoClientService
from echod.config import ConfigError
from echod.tap.client import Options, main, makeService
from tests.reactortesting import EchodMemoryReactor


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults() -> None:
    """
    With nothing given: one message to localhost port 7007.
    """
    options = parse()
    settings = options.plan.settings
    assert (settings.host, settings.port, settings.message) == ("localhost", 7007, "Hello, world")
    assert options.plan.mode == "once"


def test_positionalLikeTheSeed() -> None:
    """
    C{HOST PORT [MESSAGE]}, as the socket example takes them.
    """
    settings = parse("::1", "7", "hi there").plan.settings
    assert (settings.host, settings.port, settings.message) == ("::1", 7, "hi there")


def test_optionsAfterArguments() -> None:
    """
    Options may follow the arguments, as with ping.
    """
    options = parse("example.invalid", "7007", "--count", "3", "-i", "0.2", "-6")
    settings = options.plan.settings
    assert (settings.count, settings.interval, settings.family) == (3, 0.2, "ipv6")
    assert options.plan.mode == "ping"


def test_namedOptions() -> None:
    """
    C{--host}, C{--port} and C{--message} say the same as the arguments.
    """
    settings = parse("--host", "127.0.0.1", "--port", "9", "--message", "x").plan.settings
    assert (settings.host, settings.port, settings.message) == ("127.0.0.1", 9, "x")


def test_sameValueTwiceIsFine() -> None:
    """
    Giving a value as an argument and as an option is fine when they agree.
    """
    assert parse("h", "9", "--port", "9").plan.settings.port == 9


def test_conflictingValues() -> None:
    """
    An argument and an option that disagree are refused.
    """
    with pytest.raises(usage.UsageError, match="PORT is given twice"):
        parse("h", "9", "--port", "10")


def test_hostWithoutPort() -> None:
    """
    HOST alone is refused: the port is not guessed.
    """
    with pytest.raises(usage.UsageError, match="HOST needs a PORT"):
        parse("localhost")


def test_tooManyArguments() -> None:
    """
    An unquoted message with spaces is caught.
    """
    with pytest.raises(usage.UsageError, match="too many arguments"):
        parse("h", "7", "hello", "world")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1500", 1500), ("64K", 65536), ("100M", 100 * 1024**2), ("1G", 1024**3), ("2MB", 2000000)],
)
def test_bulkSizes(text: str, value: int) -> None:
    """
    Byte counts take K, M, G (1024) and KB, MB, GB (1000) suffixes.
    """
    options = parse("--bulk", text)
    assert options.plan.settings.bulk == value
    assert options.plan.mode == "bulk"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "seven"], "--port: 'seven' is not a whole number"),
        (
            ["--bulk", "10 apples"],
            "--bulk: '10 apples' is not a number of bytes (such as 1500, 64K, 100M, 1G)",
        ),
        (["--timeout", "soon"], "--timeout: 'soon' is not a number of seconds"),
        (["-4", "-6"], "-4 and -6 exclude each other"),
        (["--frob"], "option --frob not recognized"),
    ],
)
def test_badOptions(argv: list[str], message: str) -> None:
    """
    Malformed values are usage errors that name the option.
    """
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port = 0: expected an integer from 1 to 65535"),
        (["--count", "0"], "--count = 0: expected an integer from 1 to 100000000"),
        (["--timeout", "0"], "--timeout = 0: expected a number of seconds from 0.001"),
        (["--endpoint", "nope:x"], '--endpoint = "nope:x": unknown client endpoint type'),
        (["--message", ""], '--message = "": the payload is empty'),
    ],
)
def test_outOfRangeValues(argv: list[str], message: str) -> None:
    """
    Values are validated by the [client] schema; the error names the option.
    """
    with pytest.raises(ConfigError) as caught:
        parse(*argv)
    assert message in str(caught.value)


def test_configFileClientTable(tmp_path: Path) -> None:
    """
    The [client] table of --config gives the values the command line does not.
    """
    path = tmp_path / "echod.toml"
    path.write_text('[client]\nhost = "::1"\nport = 7\ncount = 4\ninterval = 0.5\n')
    settings = parse("--config", str(path), "--count", "2").plan.settings
    assert (settings.host, settings.port, settings.count, settings.interval) == ("::1", 7, 2, 0.5)


def test_configFileError(tmp_path: Path) -> None:
    """
    A bad value in the file is a one-line error naming file, line and key.
    """
    path = tmp_path / "echod.toml"
    path.write_text('[client]\nfamily = "ipx"\n')
    with pytest.raises(ConfigError) as caught:
        parse("--config", str(path))
    assert str(caught.value) == (
        f'{path}: line 2: client.family = "ipx": expected one of "any", "ipv4", "ipv6"'
    )


def test_underTwistdAMistakeIsOneLineAndStatus2(capsys: pytest.CaptureFixture[str]) -> None:
    """
    As a twistd subcommand, a usage or config mistake prints one line on
    stderr and exits 2, as the console script does.
    """
    options = Options()
    options.parent = usage.Options()
    with pytest.raises(SystemExit) as caught:
        options.parseOptions(["--count", "0"])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == ("echod-client: --count = 0: expected an integer from 1 to 100000000\n")
    assert captured.out == ""


def test_consoleScriptUsageError(capsys: pytest.CaptureFixture[str]) -> None:
    """
    The console script exits 2 with one line (and a hint) on a usage error,
    before anything connects.
    """
    assert main(["localhost"]) == 2
    assert capsys.readouterr().err == (
        "echod-client: HOST needs a PORT after it\nechod-client: try echod-client --help\n"
    )


def test_consoleScriptConfigError(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A config mistake is one line and status 2, without the hint.
    """
    assert main(["--config", "/nonexistent/echod.toml"]) == 2
    assert capsys.readouterr().err == (
        "echod-client: /nonexistent/echod.toml: cannot read the config file: "
        "No such file or directory\n"
    )


def test_makeServiceAssemblesOnly() -> None:
    """
    makeService builds the client service with the plan and connects nothing.
    """
    reactor = EchodMemoryReactor()
    options = parse("127.0.0.1", "7", "--count", "2")
    service = makeService(options, reactor)
    assert isinstance(service, EchoClientService)
    assert service.plan is options.plan
    assert not service.exitProcess
    assert reactor.tcpClients == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-f", "/nonexistent"],
            '-f = "/nonexistent": cannot read the payload: no such file or directory',
        ),
        (
            ["127.0.0.1", "7", "--file=/nonexistent"],
            '--file = "/nonexistent": cannot read the payload: no such file or directory',
        ),
        (["localhost", "0"], "PORT = 0: expected an integer from 1 to 65535"),
        (["-n0"], "-n = 0: expected an integer from 1 to 100000000"),
        (["-s", "5", "-m", ""], "-s = 5: cannot fill a message from an empty payload"),
        (["--po", "x"], "--port: 'x' is not a whole number"),
        (["-t", "soon"], "-t: 'soon' is not a number of seconds"),
    ],
)
def test_commandLineValuesNamedAsTyped(argv: list[str], message: str) -> None:
    """
    A value from the command line is named by the option as the user typed
    it (an abbreviated long option by its whole name), or by the argument.
    """
    with pytest.raises(usage.UsageError if "' is not" in message else ConfigError) as caught:
        parse(*argv)
    assert str(caught.value) == message


def test_fileValuesNamedByFileLineAndKey(tmp_path: Path) -> None:
    """
    A payload file named in [client] is told by the file, line and key.
    """
    path = tmp_path / "echod.toml"
    path.write_text('[client]\ncount = 2\nfile = "/nonexistent"\n')
    with pytest.raises(ConfigError) as caught:
        parse("--config", str(path))
    assert str(caught.value) == (
        f'{path}: line 3: client.file = "/nonexistent": '
        "cannot read the payload: no such file or directory"
    )


@pytest.mark.parametrize("form", ["console", "twistd"])
def test_payloadFileNamedAsTypedOnBothForms(form: str, capsys: pytest.CaptureFixture[str]) -> None:
    """
    The console script and the twistd subcommand print the same line.
    """
    argv = ["-f", "/nonexistent"]
    if form == "console":
        assert main(argv) == 2
    else:
        options = Options()
        options.parent = usage.Options()
        with pytest.raises(SystemExit) as caught:
            options.parseOptions(argv)
        assert caught.value.code == 2
    assert capsys.readouterr().err == (
        'echod-client: -f = "/nonexistent": cannot read the payload: no such file or directory\n'
    )


@pytest.mark.parametrize("form", ["console", "twistd"])
def test_everyProblemOfTheConfigFileOnBothForms(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "echod.toml"
    path.write_text('[client]\ncount = 0\nfamily = "ipx"\n[clinet]\n')
    argv = ["--config", str(path)]
    if form == "console":
        assert main(argv) == 2
    else:
        options = Options()
        options.parent = usage.Options()
        with pytest.raises(SystemExit):
            options.parseOptions(argv)
    assert capsys.readouterr().err.splitlines() == [
        f"echod-client: {path}: line 2: client.count = 0: expected an integer from 1 to 100000000",
        f'echod-client: {path}: line 3: client.family = "ipx": '
        'expected one of "any", "ipv4", "ipv6"',
        f"echod-client: {path}: line 4: unknown table [clinet] (did you mean client? known: "
        "server, udp, log, metrics, client, sniff, monitor)",
    ]


def test_tcp6EndpointConnectsOverIPv6() -> None:
    """
    C{--endpoint tcp6:host=ADDR:port=P} connects to that IPv6 address.
    """
    reactor = EchodMemoryReactor()
    options = parse("--endpoint", r"tcp6:host=\:\:1:port=7007", "--timeout", "3")
    endpoint, recording = endpointFor(reactor, options.plan, None)
    assert recording is None
    endpoint.connect(EchoClientFactory(options.plan, reactor, None))  # type: ignore[arg-type]
    [(host, port, _, timeout, bind)] = reactor.tcpClients
    assert (host, port, timeout, bind) == ("::1", 7007, 3.0, None)


def test_unknownEndpointTypeListsTheTypes() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("-e", "sctp:host=x:port=7")
    assert str(caught.value) == (
        "-e = \"sctp:host=x:port=7\": unknown client endpoint type 'sctp': the types here are "
        "tcp:, tcp6:, ssl:, unix:, tls:"
    )


# --- UDP -----------------------------------------------------------------------------


def test_udpOneShot() -> None:
    """
    C{-u HOST PORT MESSAGE}: one datagram, sent as it is.
    """
    plan = parse("-u", "127.0.0.1", "7", "Hello, world").plan
    assert (plan.settings.protocol, plan.mode, plan.built) == ("udp", "once", False)
    assert plan.payload == b"Hello, world"


def test_udpPingBuildsItsDatagrams() -> None:
    """
    Ping mode without a message of the user's: datagrams the client builds,
    with their sequence numbers.
    """
    plan = parse("--udp", "127.0.0.1", "7", "-n", "3", "--interval", "0", "--window", "8").plan
    assert (plan.mode, plan.built, plan.messageSize) == ("ping", True, 64)
    assert (plan.settings.window, plan.settings.interval) == (8, 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1", "7", "Hello, world"],
        ["--message", "Hello, world"],
    ],
)
def test_udpMessageGivenIsTheUsersPayload(argv: list[str]) -> None:
    """
    A message typed, even the default text, is sent as it is and matched by
    content.
    """
    assert not parse("-u", "-n", "3", *argv).plan.built


def test_udpMessageOfTheConfigFile(tmp_path: Path) -> None:
    path = tmp_path / "echod.toml"
    path.write_text('[client]\nprotocol = "udp"\nmessage = "Hello, world"\ncount = 3\n')
    plan = parse("--config", str(path)).plan
    assert (plan.settings.protocol, plan.built) == ("udp", False)
    path.write_text('[client]\nprotocol = "udp"\ncount = 3\n')
    assert parse("--config", str(path)).plan.built


def test_tcpOverridesTheFile(tmp_path: Path) -> None:
    path = tmp_path / "echod.toml"
    path.write_text('[client]\nprotocol = "udp"\n')
    assert parse("--config", str(path), "--tcp").plan.settings.protocol == "tcp"
    assert parse("--config", str(path)).plan.settings.protocol == "udp"


@pytest.mark.parametrize(
    ("text", "value"),
    [("5", 5.0), ("2.5", 2.5), ("5%", 5.0), ("0", 0.0), ("100 %", 100.0)],
)
def test_maxLossPercent(text: str, value: float) -> None:
    assert parse("-u", "-n", "2", "--max-loss", text).plan.settings.max_loss == value


def test_quiet() -> None:
    assert parse("-q", "-n", "2").plan.settings.quiet


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-u", "--tcp"], "-u (--udp) and --tcp exclude each other"),
        (
            ["-u", "--max-loss", "lots"],
            "--max-loss: 'lots' is not a percentage (such as 5, 0.5 or 5%)",
        ),
        (["-u", "--window", "many"], "--window: 'many' is not a whole number"),
    ],
)
def test_udpBadOptions(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-u", "--max-loss", "101"],
            "--max-loss = 101: expected a number of percent from 0 to 100",
        ),
        (["-u", "--window", "0"], "--window = 0: expected an integer from 1 to 65536"),
        (["-u", "-n", "3", "--window", "4"], "--window = 4: a window is for --interval 0"),
        (["-n", "3", "-i", "0", "--window", "4"], "--window = 4: a window is for UDP (-u)"),
        (["--max-loss", "5"], "--max-loss = 5.0: a loss allowance is for UDP (-u)"),
        (["-u", "--bulk", "1M"], "--bulk = 1048576: bulk mode streams over TCP"),
        (["-u", "-n", "2", "-s", "8"], "-s = 8: datagrams the client builds are at least 24"),
        (["-u", "-s", "70000"], "-s = 70000: a datagram of 70000 bytes is too large for UDP"),
        (
            ["-u", "-4", "-s", "65508"],
            "-s = 65508: a datagram of 65508 bytes is too large for IPv4",
        ),
    ],
)
def test_udpValuesNamedAsTyped(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(*argv)
    assert message in str(caught.value)
