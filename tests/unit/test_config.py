"""C{--config FILE}: options from TOML, the command line over them, one-line errors; and the docs that list the options."""

import re
from pathlib import Path

import pytest
from twisted.python import usage

from kafkaw import shim, tap
from kafkaw.config import ConfigFileOptions

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def configFile(tmp_path):
    """Write a config file; return its path as a string."""

    def write(text, name="kafkaw.toml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def parse(options, *argv):
    options.parseOptions(list(argv))
    return options


def configError(options, *argv):
    """The one line a bad config ends the program with."""
    with pytest.raises(SystemExit) as raised:
        options.parseOptions(list(argv))
    return raised.value.code


class LaterOptions(ConfigFileOptions):
    """Options of the kinds added later: the config file needs no code for them."""

    commandName = "later"
    optFlags = [["verbose", "v", "say more"]]
    optParameters = [["ratio", None, 0.5, "a float", float]]

    def __init__(self):
        super().__init__()
        self["tag"] = []
        self["reset"] = False

    def opt_tag(self, value):
        """repeatable"""
        if not value.isalpha():
            raise usage.UsageError("letters only")
        self["tag"].append(value)

    def opt_reset(self):
        """a flag handled by a method"""
        self["reset"] = True


# --- values from the file ----------------------------------------------------


def test_fileSetsEveryKindOfOption(configFile):
    path = configFile(
        'data-dir = "/srv/kafkaw"\n'
        'listen = ["tcp:1", "tcp:2"]\n'
        'websocket = "tcp:3"\n'
        "num-partitions = 4\n"
        "sync = true\n"
        "no-auto-create-topics = false\n"
        '"strict-0.8" = true\n'
    )
    options = parse(tap.Options(), "--config", path)
    assert options["data-dir"] == "/srv/kafkaw"
    assert options["listen"] == ["tcp:1", "tcp:2"]
    assert options["websocket"] == ["tcp:3"]
    assert options["num-partitions"] == 4
    assert options["sync"] and options["strict-0.8"]
    assert not options["no-auto-create-topics"]
    assert options["config"] == path


def test_withoutConfigTheDefaultsHold():
    options = parse(tap.Options())
    assert options["config"] is None
    assert options["data-dir"] == "kafkaw-data"
    assert options["listen"] == [tap.DEFAULT_LISTEN]


@pytest.mark.parametrize("position", ["before", "after"])
def test_commandLineOverridesTheFile(configFile, position):
    path = configFile('data-dir = "from-file"\nlisten = ["tcp:1", "tcp:2"]\nnum-partitions = 4\nbroker-id = 7\n')
    overrides = ["-d", "from-argv", "--listen", "tcp:9", "--num-part", "8"]  # a short name and an abbreviation too
    argv = ["--config", path, *overrides] if position == "before" else [*overrides, "--config", path]
    options = parse(tap.Options(), *argv)
    assert options["data-dir"] == "from-argv"
    assert options["listen"] == ["tcp:9"]  # the whole list, not appended to
    assert options["num-partitions"] == 8
    assert options["broker-id"] == 7


def test_laterOptionsWorkWithoutMoreCode(configFile):
    path = configFile('verbose = true\nratio = 2\ntag = ["a", "b"]\nreset = true\n')
    options = parse(LaterOptions(), "--config", path)
    assert options["verbose"] and options["reset"]
    assert options["ratio"] == 2.0
    assert options["tag"] == ["a", "b"]
    assert parse(LaterOptions(), "--config", path, "--tag", "c")["tag"] == ["c"]
    bad = configFile('tag = ["a1"]\n', "bad.toml")
    assert configError(LaterOptions(), "--config", bad) == f"later: config {bad}: bad value 'a1' for 'tag': letters only"


def test_shimOptionsFromTheFile(configFile):
    path = configFile('connect = "ws://127.0.0.1:9093/"\nconnect-attempts = 2\n', "shim.toml")
    options = parse(shim.Options(), "--config", path)
    assert options["connect"] == "ws://127.0.0.1:9093/"
    assert options["connect-attempts"] == 2
    assert configError(shim.Options(), "--config", configFile("connect-attempts = 0\n", "bad.toml")).startswith(
        "kafkaw-shim: config "
    )


def test_helpDoesNotReadTheFile(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        tap.Options().parseOptions(["--config", str(tmp_path / "missing.toml"), "--help"])
    assert raised.value.code == 0
    assert "--config=" in capsys.readouterr().out


# --- bad files: one line, naming the file ------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ("num-partition = 4\n", "unknown option 'num-partition'"),
        ("d = 'x'\n", "unknown option 'd'"),
        ("config = 'other.toml'\n", "unknown option 'config'"),
        ("help = true\n", "unknown option 'help'"),
        ("strict-0.8 = true\n", "unknown option 'strict-0' (a name with a dot needs quotes: \"strict-0.8\" = ...)"),
        ("sync = 'yes'\n", "'sync' is a flag: true or false, not 'yes'"),
        ("num-partitions = true\n", "'num-partitions' takes a string or a number, not True"),
        ("data-dir = ['a']\n", "'data-dir' takes a string or a number, not ['a']"),
        ("listen = [{port = 1}]\n", "'listen' takes a string, a number or a list of them, not {'port': 1}"),
        ("num-partitions = 0\n", "bad value 0 for 'num-partitions': num-partitions must be at least 1"),
        ("num-partitions = 'four'\n", "bad value 'four' for 'num-partitions': invalid literal for int() with base 10: 'four'"),
        ("a = 1\nb = 2\nsync yes\n", "not valid TOML: Expected '=' after a key in a key/value pair (at line 3, column 6)"),
    ],
)
def test_badValues(configFile, text, why):
    path = configFile(text)
    assert configError(tap.Options(), "--config", path) == f"kafkaw: config {path}: {why}"


def test_unreadableFiles(tmp_path):
    missing = str(tmp_path / "missing.toml")
    assert configError(tap.Options(), "--config", missing) == f"kafkaw: config {missing}: cannot read it: No such file or directory"
    assert configError(tap.Options(), "--config", str(tmp_path)) == f"kafkaw: config {tmp_path}: cannot read it: Is a directory"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'advertised-host = "caf\xe9"\n')
    assert configError(tap.Options(), "--config", str(latin1)) == (
        f"kafkaw: config {latin1}: not UTF-8 text: invalid continuation byte at byte 22"
    )


def test_overriddenKeysAreNotRead(configFile):
    """An option the command line sets is not taken from the file, even a bad value; unknown keys still fail."""
    path = configFile("num-partitions = 0\n")
    assert parse(tap.Options(), "--config", path, "--num-partitions", "3")["num-partitions"] == 3
    path = configFile("num-partitions = 0\nfoo = 1\n")
    assert configError(tap.Options(), "--config", path, "--num-partitions", "3") == f"kafkaw: config {path}: unknown option 'foo'"


# --- the shipped examples ------------------------------------------------------


def uncommented(text):
    """The example with its commented-out options (`# key = value`) switched on."""
    return re.sub(r"(?m)^# (\"?[\w.-]+\"? = )", r"\1", text)


def test_brokerExampleLoads(configFile):
    example = DOCS / "kafkaw.example.toml"
    options = parse(tap.Options(), "--config", str(example))
    assert options["data-dir"] == "/var/lib/kafkaw"
    assert options["listen"] == ["tcp:9092:interface=127.0.0.1"]
    assert options["num-partitions"] == 4
    everything = parse(tap.Options(), "--config", configFile(uncommented(example.read_text())))
    assert everything["sync"] and everything["strict-0.8"] and everything["no-websocket"]
    assert everything["advertised-host"] == "kafka.example.com"


def test_shimExampleLoads(configFile):
    example = DOCS / "kafkaw-shim.example.toml"
    options = parse(shim.Options(), "--config", str(example))
    assert options["connect"] == "wss://kafka.example.com:9093/"
    everything = parse(shim.Options(), "--config", configFile(uncommented(example.read_text())))
    assert everything["ca-cert"] == "/etc/kafkaw/broker-ca.pem"


# --- docs/configuration.md lists every option, with its default ------------------


def documentedOptions(heading):
    """{long name: (option cell, default cell)} of the table under C{heading} in docs/configuration.md."""
    text = (DOCS / "configuration.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `-"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            name = re.match(r"`--([^`]+)`", cells[0]).group(1)
            rows[name] = (cells[0], cells[1])
    return rows


@pytest.mark.parametrize("heading, optionsClass", [("## `twistd kafkaw`", tap.Options), ("## `twistd kafkaw-shim`", shim.Options)])
def test_docsListEveryOption(heading, optionsClass):
    options = optionsClass()
    documented = documentedOptions(heading)
    names = options.settableNames() | {"config"}
    assert sorted(documented) == sorted(names), "docs/configuration.md must list exactly the options of " + heading
    for name in names:
        optionCell, defaultCell = documented[name]
        for short, long in options.synonyms.items():
            if long == name and len(short) == 1:
                assert f"`-{short}`" in optionCell, f"{name}: its short form -{short} is not documented"
        handler = options._dispatch[name]
        if handler == options._generic_flag:
            assert defaultCell == "off", name
        elif isinstance(handler, usage.CoerceParameter) and options.defaults[name] is not None:
            assert f"`{options.defaults[name]}`" in defaultCell, f"{name}: default is {options.defaults[name]!r}"
        else:
            stated = re.search(r"\[default: (\S+)\]", options.docs[name] or "")
            if stated:
                assert f"`{stated.group(1)}`" in defaultCell, f"{name}: default is {stated.group(1)}"
            assert defaultCell, name
