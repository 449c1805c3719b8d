"""C{--config FILE}: any option of a L{usage.Options} read from a TOML file.

Keys are the long option names. Flags take true or false; options handled by
an C{opt_*} method (the repeatable ones, such as C{listen}) take a list, or a
single value; other parameters take a string or a number. Every value goes
through the option's own code (its coerce, its C{opt_*} method), as if it had
been typed, so options added later need nothing here. An option given on the
command line replaces the file's value; for a repeatable one, the whole list.

A bad file ends the program with one line naming the file and what is wrong,
not with a usage dump: it is usually read by a service manager at boot.
"""

import getopt
import sys
import tomllib

from twisted.python import usage

NOT_FROM_FILE = frozenset({"help", "version", "config"})


def atLeast(name, minimum):
    """A usage.Options coerce for a parameter that takes an integer of at least C{minimum}."""

    def convert(value):
        number = int(value)
        if number < minimum:
            raise ValueError(f"{name} must be at least {minimum}")
        return number

    convert.coerceDoc = "A positive integer." if minimum == 1 else f"An integer of at least {minimum}."
    return convert


def positive(name):
    """A usage.Options coerce for a parameter that takes an integer of at least 1."""
    return atLeast(name, 1)


class ConfigError(Exception):
    """What is wrong with a config file, in a few words."""


class ConfigFileOptions(usage.Options):
    """L{usage.Options} plus C{--config}; subclasses set C{commandName}, the prefix of error lines."""

    commandName = None
    optParameters = [
        ["config", None, None, "TOML file of options: keys are the long option names (docs/configuration.md); options on the command line override it"],
    ]

    def parseOptions(self, options=None):
        if options is None:
            options = sys.argv[1:]
        given = self._namesOnCommandLine(options)
        if given is not None and given.get("config") and not given.keys() & {"help", "version"}:
            path = given["config"]
            try:
                self.applyConfig(readConfig(path), skip=given.keys())
            except ConfigError as e:
                raise SystemExit(f"{self.commandName}: config {path}: {e}")
        super().parseOptions(options)

    def _namesOnCommandLine(self, options):
        """{long name: last value} of the options in C{options}, or None if they do not parse (the real parse says why)."""
        try:
            parsed, _ = getopt.getopt(options, self.shortOpt, self.longOpt)
        except getopt.error:
            return None
        given = {}
        for opt, value in parsed:
            name = opt.lstrip("-")
            name = self.synonyms.get(name) or self.synonyms.get(name.replace("-", "_"))
            if name is not None:
                given[name] = value
        return given

    def settableNames(self):
        """The long names a config file may set."""
        return {name for long, name in self.synonyms.items() if long == name and name not in NOT_FROM_FILE}

    def applyConfig(self, config, skip=()):
        """Set the options in the dict C{config}, except those named in C{skip}; raise L{ConfigError}."""
        names = self.settableNames()
        for key, value in config.items():
            if key not in names:
                raise ConfigError(f"unknown option {key!r}{_dottedHint(key, value, names)}")
            if key not in skip:
                self._apply(key, value)

    def _apply(self, name, value):
        handler = self._dispatch[name]
        if isinstance(handler, usage.CoerceParameter):
            text = _scalar(name, value, "a string or a number")
            try:
                self[name] = handler.coerce(text)
            except ValueError as e:
                raise ConfigError(f"bad value {value!r} for {name!r}: {e}")
        elif handler == self._generic_flag or usage.flagFunction(getattr(self, "opt_" + name.replace("-", "_"))):
            if not isinstance(value, bool):
                raise ConfigError(f"{name!r} is a flag: true or false, not {value!r}")
            if value:
                handler(name)
        else:
            values = value if isinstance(value, list) else [value]
            for item in values:
                text = _scalar(name, item, "a string, a number or a list of them")
                try:
                    handler(name, text)
                except (usage.UsageError, ValueError) as e:
                    raise ConfigError(f"bad value {item!r} for {name!r}: {e}")


def _scalar(name, value, expected):
    """C{value} as the text a command line would carry."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{name!r} takes {expected}, not {value!r}")
    return value if isinstance(value, str) else str(value)


def _dottedHint(key, value, names):
    """TOML reads C{strict-0.8 = true} as a table C{strict-0}: point at the quoted key."""
    if isinstance(value, dict):
        dotted = sorted(name for name in names if name.startswith(key + "."))
        if dotted:
            return f" (a name with a dot needs quotes: \"{dotted[0]}\" = ...)"
    return ""


def readConfig(path):
    """The TOML file at C{path} as a dict; raise L{ConfigError} if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read it: {e.strerror}")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason} at byte {e.start}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}")
