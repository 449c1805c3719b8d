"""Check kafkaw/protocol/definitions.py against Kafka 2.3.0's message JSON.

A developer script, not a test: it needs Kafka's sources as a git dir.

    python tests/check_definitions.py /path/to/kafka.git [tag]

Reads C{clients/src/main/resources/common/message/<Struct name>.json} at the
tag (default 2.3.0) with C{git show} and compares, for every API in
C{definitions.APIS}: api key, validVersions, and for every field at every
depth its name, type, versions, nullableVersions and default. Prints each
difference and exits 1 if there is any.
"""

import json
import subprocess
import sys

from kafkaw.protocol.definitions import APIS

MESSAGES = "clients/src/main/resources/common/message"


def stripComments(text):
    """Kafka's JSON has // comments; drop them outside strings."""
    out = []
    i = 0
    inString = False
    while i < len(text):
        c = text[i]
        if inString:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                inString = False
        elif c == '"':
            inString = True
            out.append(c)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def readMessage(gitDir, tag, name):
    result = subprocess.run(
        ["git", "-C", gitDir, "show", f"{tag}:{MESSAGES}/{name}.json"], capture_output=True, text=True
    )
    if result.returncode:
        return None
    return json.loads(stripComments(result.stdout))


def jsonDefault(field):
    """Kafka's "default" as the Python value definitions.py should hold."""
    value = field["default"]
    if not isinstance(value, str):
        return value
    if value == "null":
        return None
    if field["type"] == "bool":
        return {"true": True, "false": False}[value]
    if field["type"] in ("int8", "int16", "int32", "int64"):
        return int(value, 0)
    return value


def compareFields(path, mine, theirs, problems):
    myNames = [f.jsonName for f in mine]
    theirNames = [f["name"] for f in theirs]
    if myNames != theirNames:
        problems.append(f"{path}: fields {myNames} != Kafka's {theirNames}")
    theirsByName = {f["name"]: f for f in theirs}
    for field in mine:
        where = f"{path}.{field.jsonName}"
        other = theirsByName.get(field.jsonName)
        if other is None:
            continue
        if field.name != field.jsonName[:1].lower() + field.jsonName[1:]:
            problems.append(f"{where}: attribute name {field.name!r}")
        checks = [
            ("type", field.type, other["type"]),
            ("versions", field.versions.text, other.get("versions")),
            ("nullableVersions", field.nullableVersions.text, other.get("nullableVersions")),
        ]
        for what, ours, kafkas in checks:
            if ours != kafkas:
                problems.append(f"{where}: {what} {ours!r} != Kafka's {kafkas!r}")
        if "default" in other:
            if field.givenDefault != jsonDefault(other) or type(field.givenDefault) is not type(jsonDefault(other)):
                problems.append(f"{where}: default {field.givenDefault!r} != Kafka's {other['default']!r}")
        elif field.hasDefault:
            problems.append(f"{where}: default {field.givenDefault!r}, Kafka has none")
        if field.struct is not None or "fields" in other:
            compareFields(where, field.struct.fields if field.struct else [], other.get("fields", []), problems)


def check(gitDir, tag="2.3.0"):
    problems = []
    for key, api in sorted(APIS.items()):
        for struct, kind in ((api.request, "request"), (api.response, "response")):
            message = readMessage(gitDir, tag, struct.name)
            if message is None:
                problems.append(f"{api.name}: no {struct.name}.json at {tag}")
                continue
            if message.get("type") != kind:
                problems.append(f"{struct.name}: type {message.get('type')!r}, not {kind}")
            if message["apiKey"] != key:
                problems.append(f"{struct.name}: api key {message['apiKey']} != {key}")
            valid = f"{api.minVersion}-{api.maxVersion}"
            if message["validVersions"] != valid:
                problems.append(f"{struct.name}: validVersions {valid} != Kafka's {message['validVersions']}")
            if message.get("flexibleVersions", "none") != "none":
                problems.append(f"{struct.name}: flexibleVersions {message['flexibleVersions']} (not supported)")
            compareFields(struct.name, struct.fields, message["fields"], problems)
    return problems


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    problems = check(*argv[1:])
    for problem in problems:
        print(problem)
    apis = len(APIS)
    print(f"{apis} APIs checked: {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
