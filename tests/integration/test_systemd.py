"""docs/systemd/*.service: systemd accepts them, and their ExecStart runs.

The units name the twistd of a venv in /opt/kafkaw (docs/operations.md), which
does not exist here, and `systemd-analyze verify` checks that ExecStart's
program does; so the tests check a copy whose ExecStart names this
interpreter's twistd, and run that command line with the paths of this machine
in place of the installed ones.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from twisted.scripts.twistd import ServerOptions

from tests.integration.conftest import ROOT, freePort, kcat, waitForPort

SYSTEMD = ROOT / "docs" / "systemd"
INSTALLED_TWISTD = "/opt/kafkaw/venv/bin/twistd"


def twistd():
    """The twistd script next to this interpreter (the venv's), or on the PATH."""
    beside = Path(sys.executable).parent / "twistd"
    found = str(beside) if beside.exists() else shutil.which("twistd")
    if found is None:
        pytest.fail("no twistd script next to the interpreter or on the PATH (pip install .)")
    return found


def execStart(unit):
    """The ExecStart argv of a unit file, as systemd splits it (no specifiers or variables are used)."""
    parser = configparser.ConfigParser(delimiters=("=",), strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(SYSTEMD / unit)
    return shlex.split(parser["Service"]["ExecStart"])


def toTOML(config):
    """A flat dict of strings, numbers, booleans and string lists as TOML (JSON spells those the same way)."""
    return "".join(f"{json.dumps(key)} = {json.dumps(value)}\n" for key, value in config.items())


@pytest.mark.parametrize("unit", ["kafkaw.service", "kafkaw-shim.service", "kafkaw@.service"])
def test_systemdAcceptsTheUnit(tmp_path, unit):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing = "systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    text = (SYSTEMD / unit).read_text()
    assert text.count(f"ExecStart={INSTALLED_TWISTD} ") == 1
    # A template is verified as one of its instances (kafkaw@1.service).
    unit = unit.replace("@.", "@1.")
    (tmp_path / unit).write_text(text.replace(INSTALLED_TWISTD, twistd()))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, warning on stderr: any warning fails.
    assert (result.returncode, result.stderr) == (0, "")


def test_shimExecStartParses():
    """twistd's own parser takes the shim unit's command line with the example config in place."""
    argv = execStart("kafkaw-shim.service")
    assert argv[0] == INSTALLED_TWISTD and argv[-1] == "--config=/etc/kafkaw/kafkaw-shim.toml"
    options = ServerOptions()
    options.parseOptions([*argv[1:-1], f"--config={ROOT / 'docs' / 'kafkaw-shim.example.toml'}"])
    assert options["nodaemon"] and options["pidfile"] == ""
    assert options.subCommand == "kafkaw-shim"
    assert options.subOptions["connect"] == "wss://kafka.example.com:9093/"


def test_clusterTemplateExecStartParses():
    """twistd's own parser takes kafkaw@1's command line with the cluster example config in place."""
    argv = execStart("kafkaw@.service")
    assert argv[0] == INSTALLED_TWISTD and argv[-1] == "--config=/etc/kafkaw/kafkaw-%i.toml"
    options = ServerOptions()
    options.parseOptions([*argv[1:-1], f"--config={ROOT / 'docs' / 'kafkaw-cluster.example.toml'}"])
    assert options.subCommand == "kafkaw"
    broker = options.subOptions
    assert (broker["storage-type"], broker["storage-arguments"]) == ("postgresql", None)  # the DSN: from the environment
    assert (broker["broker-id"], broker["advertised-host"], broker["lease-ms"]) == (1, "kafka1.example.com", 10000)


def test_execStartRunsTheBroker(tmp_path):
    """The unit's command line, with the example config, serves kcat and stops cleanly on SIGTERM."""
    argv = execStart("kafkaw.service")
    assert argv[0] == INSTALLED_TWISTD and argv[-1] == "--config=/etc/kafkaw/kafkaw.toml"
    config = tomllib.loads((ROOT / "docs" / "kafkaw.example.toml").read_text())
    assert config["data-dir"] == "/var/lib/kafkaw"
    port, websocketPort = freePort(), freePort()
    config.update(
        {
            "data-dir": str(tmp_path / "state"),
            "listen": [f"tcp:{port}:interface=127.0.0.1"],
            "websocket": [f"tcp:{websocketPort}:interface=127.0.0.1"],
        }
    )
    (tmp_path / "kafkaw.toml").write_text(toTOML(config))
    command = [twistd(), *argv[1:-1], f"--config={tmp_path / 'kafkaw.toml'}"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # systemd's environment is about as bare
    logPath = tmp_path / "stdout"
    with open(logPath, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        waitForPort(port, process=process)
        listing = kcat("-L", "-b", f"127.0.0.1:{port}").decode()
        assert f"broker 0 at 127.0.0.1:{port}" in listing
        process.send_signal(signal.SIGTERM)
        # twistd ends by killing itself with SIGTERM: systemd counts that as a clean stop.
        assert process.wait(20) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = logPath.read_text().splitlines()
    assert "<6>[kafkaw.tap.BrokerService#info] store closed" in lines
    assert lines and all(re.match(r"<[4-7]>", line) for line in lines), "journald lines with a priority, no errors"
    assert (tmp_path / "state" / "leveldb").is_dir()
