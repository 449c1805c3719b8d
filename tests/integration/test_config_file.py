"""A bad --config stops `twistd kafkaw` / `twistd kafkaw-shim` at start: one line on stderr, exit status 1."""

import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile="]


@pytest.mark.parametrize(
    "plugin, text, why",
    [
        ("kafkaw", "foo = 1\n", "unknown option 'foo'"),
        ("kafkaw", "num-partitions = 0\n", "bad value 0 for 'num-partitions': num-partitions must be at least 1"),
        ("kafkaw", "listen = [\n", "not valid TOML: Invalid value (at end of document)"),
        ("kafkaw-shim", "connect = true\n", "'connect' takes a string or a number, not True"),
    ],
)
def test_badConfigIsOneLine(tmp_path, plugin, text, why):
    (tmp_path / "bad.toml").write_text(text)
    result = subprocess.run(
        [*TWISTD, plugin, "--config", "bad.toml"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert (result.returncode, result.stderr, result.stdout) == (1, f"{plugin}: config bad.toml: {why}\n", "")
    assert not (tmp_path / "kafkaw-data").exists()
