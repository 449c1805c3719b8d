"""SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with stock clients against `twistd kafkaw --sasl`.

One broker serves every client: user alice made offline with `kafkaw users add`
before its first start, SASL on its plain TCP endpoint, on a TLS endpoint
(SASL_SSL) and on a wss:// endpoint (through `twistd kafkaw-shim`), and one TCP
endpoint left open with --sasl-exempt. Wrong passwords and guessing run against
brokers of their own, so their failures slow nobody else down.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from tests.integration.conftest import (
    ROOT,
    BrokerProcess,
    Connection,
    freePort,
    kafkajs,
    kcat,
    rdConsume,
    rdProduce,
    selfSignedCertificate,
    waitForPort,
)

PASSWORD = "s3cret-Ü"  # non-ASCII on purpose: the UTF-8 bytes are what both sides hash
SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3
MODERN = {"api.version.request": True}  # librdkafka asks ApiVersions, then SaslHandshake v1


def addUser(dataDir, name, password):
    """`kafkaw users add` as an operator runs it, password on stdin."""
    result = subprocess.run(
        [sys.executable, "-m", "kafkaw.cli", "users", "add", name, "--data-dir", str(dataDir)],
        input=password + "\n", capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def startSaslBroker(directory, *extraArgs):
    directory.mkdir(exist_ok=True)
    dataDir = directory / "data"
    dataDir.mkdir()
    addUser(dataDir, "alice", PASSWORD)
    # --sasl enforces ACLs: alice may do anything here (test_acls.py covers the ACLs themselves).
    broker = BrokerProcess(dataDir, ["--sasl", "--super-user", "User:alice", *extraArgs])
    broker.start()
    return broker


@pytest.fixture(scope="module")
def saslBroker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sasl")
    keyPath, certPath = selfSignedCertificate(directory, "broker")
    tlsPort, wssPort, openPort = freePort(), freePort(), freePort()
    tls = f"ssl:{tlsPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1"
    wss = f"ssl:{wssPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1"
    exempt = f"tcp:{openPort}:interface=127.0.0.1"
    broker = startSaslBroker(
        directory, "--num-partitions", "1", "--sasl-failure-delay-ms", "1",
        "--listen", tls, "--websocket", wss, "--listen", exempt, "--sasl-exempt", exempt,
        "--super-user", "User:ANONYMOUS",  # the exempt endpoint: an operator's port, where users are managed
    )
    for port in (tlsPort, wssPort, openPort):
        waitForPort(port, process=broker.process)
    broker.tlsPort, broker.wssPort, broker.openPort, broker.certPath = tlsPort, wssPort, openPort, certPath
    yield broker
    broker.stop()
    assert not re.search(r"Traceback|Unhandled", broker.logText())


def rdSasl(mechanism, password=PASSWORD, protocol="SASL_PLAINTEXT"):
    return {
        **MODERN, "security.protocol": protocol, "sasl.mechanism": mechanism,
        "sasl.username": "alice", "sasl.password": password,
    }


def roundTrip(bootstrap, topic, **conf):
    messages = [(0, f"k{i}".encode(), f"{topic}-{i}".encode()) for i in range(3)]
    reports = rdProduce(bootstrap, topic, messages, **conf)
    assert [error for error, *_ in reports] == [None] * 3
    got = rdConsume(bootstrap, topic, {0: 3}, **conf)
    assert [value for _, _, value in got[0]] == [value for _, _, value in messages]


# --- confluent-kafka (librdkafka) ----------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_confluentKafkaSaslPlaintext(saslBroker, mechanism):
    roundTrip(saslBroker.bootstrap, f"rd-{mechanism}", **rdSasl(mechanism))
    assert f"authenticated as User:alice with {mechanism}" in saslBroker.logText()


def test_confluentKafkaSaslSslScram(saslBroker):
    conf = {**rdSasl("SCRAM-SHA-256", protocol="SASL_SSL"), "ssl.ca.location": str(saslBroker.certPath)}
    roundTrip(f"127.0.0.1:{saslBroker.tlsPort}", "rd-ssl", **conf)


def test_confluentKafkaWithoutSaslIsNotServed(saslBroker):
    """A client that does not authenticate gets nothing, not even Metadata."""
    errors = []
    producer = Producer({**MODERN, "bootstrap.servers": saslBroker.bootstrap, "error_cb": lambda e: errors.append(e)})
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=2)
    assert "Metadata request before SASL authentication" in saslBroker.logText()


def test_theExemptEndpointServesWithoutAuthentication(saslBroker):
    roundTrip(f"127.0.0.1:{saslBroker.openPort}", "open", **MODERN)


def test_saslEnforcesAclsAUserWithoutWriteIsDenied(saslBroker):
    """--sasl turns ACLs on: frank, authenticated but granted nothing, gets
    TOPIC_AUTHORIZATION_FAILED (29) and nothing of his is stored."""
    added = cli("--bootstrap", f"127.0.0.1:{saslBroker.openPort}", "users", "add", "frank", password="frank-pass\n")
    assert added.returncode == 0, added.stderr
    roundTrip(saslBroker.bootstrap, "alices", **rdSasl("SCRAM-SHA-256"))  # the topic exists, alice wrote 3
    frank = {**rdSasl("SCRAM-SHA-256"), "sasl.username": "frank", "sasl.password": "frank-pass"}
    reports = rdProduce(saslBroker.bootstrap, "alices", [(0, None, b"frank was here")], timeout=5, **frank)
    assert [error.code() for error, *_ in reports] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    after = rdProduce(saslBroker.bootstrap, "alices", [(0, None, b"alice again")], **rdSasl("SCRAM-SHA-256"))
    assert [(error, offset) for error, _, offset, *_ in after] == [(None, 3)]  # right after alice's first three
    stored = rdConsume(saslBroker.bootstrap, "alices", {0: 4}, **rdSasl("SCRAM-SHA-256"))
    assert b"frank was here" not in [value for _, _, value in stored[0]]


# --- kafka-python ----------------------------------------------------------------


@pytest.mark.parametrize(
    "mechanism, apiVersion",
    [("PLAIN", None), ("SCRAM-SHA-256", None), ("SCRAM-SHA-512", None), ("PLAIN", (0, 10, 0)), ("SCRAM-SHA-256", (0, 10, 0))],
    ids=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN-handshake-v0", "SCRAM-SHA-256-handshake-v0"],
)
def test_kafkaPython(saslBroker, mechanism, apiVersion):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    conf = dict(
        bootstrap_servers=saslBroker.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
        sasl_plain_username="alice", sasl_plain_password=PASSWORD,
    )
    if apiVersion:
        conf["api_version"] = apiVersion
    topic = f"kp-{mechanism}-{bool(apiVersion)}"
    producer = KafkaProducer(**conf)
    try:
        offsets = [producer.send(topic, f"v{i}".encode(), partition=0).get(10).offset for i in range(3)]
    finally:
        producer.close()
    assert offsets == [0, 1, 2]
    consumer = KafkaConsumer(**conf, consumer_timeout_ms=5000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        assert [m.value for m in consumer][:3] == [b"v0", b"v1", b"v2"]
    finally:
        consumer.close()


# --- kafkajs -----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["scram-sha-256", "scram-sha-512", "plain"])
def test_kafkajs(saslBroker, monkeypatch, mechanism):
    monkeypatch.setenv("KAFKAW_SASL", json.dumps({"mechanism": mechanism, "username": "alice", "password": PASSWORD}))
    result = kafkajs("produce", saslBroker.bootstrap, f"js-{mechanism}", "3", "1")
    assert result["ok"] and [m["offset"] for m in result["sent"]] == [0, 1, 2]


# --- kcat, and through the shim over wss:// --------------------------------------------


def kcatSasl(mechanism, password=PASSWORD):
    return ["-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanisms={mechanism}",
            "-X", "sasl.username=alice", "-X", f"sasl.password={password}"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_kcat(saslBroker, mechanism):
    topic = f"kc-{mechanism}"
    kcat("-b", saslBroker.bootstrap, *kcatSasl(mechanism), "-P", "-t", topic, "-p", "0", input=b"one\ntwo\n")
    consume = ["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e"]
    assert kcat("-b", saslBroker.bootstrap, *kcatSasl(mechanism), *consume) == b"one\ntwo\n"


def test_throughTheShimOverWss(saslBroker, shimFactory):
    """The shim carries SASL frames like any other: clients authenticate with the broker through it."""
    shim = shimFactory(f"wss://localhost:{saslBroker.wssPort}/", "--ca-cert", str(saslBroker.certPath))
    kcat("-b", shim.bootstrap, *kcatSasl("SCRAM-SHA-256"), "-P", "-t", "wss", "-p", "0", input=b"secret\n")
    consume = ["-C", "-t", "wss", "-p", "0", "-o", "beginning", "-e"]
    assert kcat("-b", shim.bootstrap, *kcatSasl("SCRAM-SHA-512"), *consume) == b"secret\n"
    roundTrip(shim.bootstrap, "wss-rd", **rdSasl("SCRAM-SHA-256"))
    with pytest.raises(AssertionError, match="Authentication failed"):
        kcat("-b", shim.bootstrap, *kcatSasl("SCRAM-SHA-256", "wrong"), "-L", timeout=20)


# --- wrong passwords and guessing (brokers of their own) ---------------------------------


@pytest.fixture(scope="module")
def guardedBroker(tmp_path_factory):
    broker = startSaslBroker(tmp_path_factory.mktemp("guarded"))  # the default delay: 100 ms
    yield broker
    broker.stop()
    assert not re.search(r"Traceback|Unhandled", broker.logText())


def test_aWrongPasswordFailsFastWithAClearMessage(tmp_path, caplog):
    broker = startSaslBroker(tmp_path / "wrong", "--sasl-failure-delay-ms", "1")
    try:
        errors = []
        producer = Producer({**rdSasl("SCRAM-SHA-256", "wrong"), "bootstrap.servers": broker.bootstrap, "error_cb": errors.append})
        started = time.monotonic()
        while not errors and time.monotonic() - started < 5:
            producer.poll(0.05)
        elapsed = time.monotonic() - started
        del producer  # librdkafka would go on trying
        assert errors and "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256" in str(errors[0])
        assert elapsed < 1.0
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        kafkaPython = KafkaProducer(
            bootstrap_servers=broker.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
            sasl_plain_username="alice", sasl_plain_password="wrong", api_version=(2, 3), max_block_ms=2000,
        )
        try:
            with pytest.raises(KafkaError):
                kafkaPython.send("x", b"x").get(2)
        finally:
            kafkaPython.close(0)
        assert "[Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN" in caplog.text
        log = broker.logText()
        assert "SASL SCRAM-SHA-256 authentication failed for" in log and "host='127.0.0.1'" in log
    finally:
        broker.stop()


def plainAttempt(bootstrap, password, sourceHost=None):
    """One SaslHandshake v1 + SaslAuthenticate v1 PLAIN exchange on a new connection; the error code."""
    with Connection(bootstrap, timeout=20, sourceHost=sourceHost) as connection:
        assert connection.call(SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).errorCode == 0
        response = connection.call(SASL_AUTHENTICATE, 1, {"authBytes": f"\0alice\0{password}".encode()})
        if response.errorCode == 0:
            assert connection.call(METADATA, 1, {"topics": []}).brokers
        return response.errorCode


def test_guessesFromOneHostAreSlowedWhileOthersAreServed(guardedBroker):
    """Documented minimum (docs/security.md): with the default 100 ms, n failed
    attempts from one host take at least sum(min(0.1 * 2**k, 3.2) for k < n) s."""
    guesses = 6
    started = time.monotonic()
    for _ in range(guesses):
        assert plainAttempt(guardedBroker.bootstrap, "guess") == 58
    elapsed = time.monotonic() - started
    assert elapsed >= 0.1 + 0.2 + 0.4 + 0.8 + 1.6  # the first attempt waits nothing
    # Meanwhile another host (127.0.0.2 is loopback too) is served at once...
    started = time.monotonic()
    assert plainAttempt(guardedBroker.bootstrap, PASSWORD, sourceHost="127.0.0.2") == 0
    assert time.monotonic() - started < 1.0
    # ...while the guessing host's next attempt, right password or not, waits its turn.
    started = time.monotonic()
    assert plainAttempt(guardedBroker.bootstrap, PASSWORD) == 0
    assert time.monotonic() - started >= 3.2


# --- users on a running broker: AlterUserScramCredentials / DescribeUserScramCredentials v0 ----


def cli(*args, password=None, saslPassword=None):
    """`kafkaw ARGS`: C{password} on stdin (a new user's), C{saslPassword} in $KAFKAW_SASL_PASSWORD."""
    env = dict(os.environ)
    env.pop("KAFKAW_SASL_PASSWORD", None)
    if saslPassword is not None:
        env["KAFKAW_SASL_PASSWORD"] = saslPassword
    return subprocess.run(
        [sys.executable, "-m", "kafkaw.cli", *args], input=password, capture_output=True, text=True, timeout=30, cwd=ROOT,
        env=env,
    )


def grantTopic(broker, user, topic):
    """Let C{user} do anything with C{topic} (creating it included) and any
    group (the consumer's), through the exempt endpoint."""
    granted = cli("--bootstrap", f"127.0.0.1:{broker.openPort}", "acls", "add", "--allow-principal", f"User:{user}",
                  "--operation", "All", "--topic", topic, "--group", "*")
    assert granted.returncode == 0, granted.stderr


def test_kafkawUsersOnARunningBroker(saslBroker):
    """`kafkaw users --bootstrap` (through the exempt endpoint) adds a user who can log in at once."""
    bootstrap = f"127.0.0.1:{saslBroker.openPort}"
    added = cli("--bootstrap", bootstrap, "users", "add", "carol", password="carol-pass\n")
    assert (added.returncode, added.stdout, added.stderr) == (0, "set the password of user carol (SCRAM-SHA-256, SCRAM-SHA-512)\n", "")
    listed = cli("--bootstrap", bootstrap, "users", "list").stdout.splitlines()
    assert "carol\tSCRAM-SHA-256 (4096 iterations), SCRAM-SHA-512 (4096 iterations)" in listed
    conf = {**rdSasl("SCRAM-SHA-512", "carol-pass"), "sasl.username": "carol"}
    grantTopic(saslBroker, "carol", "carol-topic")  # --sasl enforces ACLs
    roundTrip(saslBroker.bootstrap, "carol-topic", **conf)
    assert cli("--bootstrap", bootstrap, "users", "remove", "carol").stdout == "removed user carol\n"
    gone = cli("--bootstrap", bootstrap, "users", "remove", "carol")
    assert (gone.returncode, gone.stderr) == (1, "kafkaw: no user carol\n")
    refused = cli("--bootstrap", saslBroker.bootstrap, "users", "list")  # the SASL endpoint, without --sasl-mechanism
    assert refused.returncode == 1 and "closed the connection on DescribeUserScramCredentials" in refused.stderr


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafkawAuthenticatesOnASaslEndpoint(saslBroker, mechanism):
    """`kafkaw --sasl-mechanism M --sasl-username alice`: the admin command
    on the SASL endpoint itself, as alice (a super user here)."""
    topic = f"cli-{mechanism.lower()}"
    sasl = ("--bootstrap", saslBroker.bootstrap, "--sasl-mechanism", mechanism, "--sasl-username", "alice")
    created = cli(*sasl, "topics", "create", topic, saslPassword=PASSWORD)
    assert (created.returncode, created.stderr) == (0, ""), created.stderr
    listed = cli(*sasl, "topics", "list", saslPassword=PASSWORD)
    assert topic in listed.stdout.splitlines()
    assert f"authenticated as User:alice with {mechanism}" in saslBroker.logText()


def test_kafkawOverTlsWithScram(saslBroker):
    """SASL_SSL: --ca-cert checks the broker's certificate (and its name), then SCRAM."""
    tls = ("--bootstrap", f"127.0.0.1:{saslBroker.tlsPort}", "--ca-cert", str(saslBroker.certPath))
    listed = cli(*tls, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "alice", "users", "list", saslPassword=PASSWORD)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert any(line.startswith("alice\t") for line in listed.stdout.splitlines())
    untrusted = cli("--bootstrap", f"127.0.0.1:{saslBroker.tlsPort}", "--tls", "topics", "list")  # the system's CAs
    assert untrusted.returncode == 1 and "TLS with" in untrusted.stderr and "certificate verify failed" in untrusted.stderr


def test_kafkawWithAWrongPasswordSaysSo(saslBroker):
    sasl = ("--bootstrap", saslBroker.bootstrap, "--sasl-username", "alice")
    wrong = cli(*sasl, "--sasl-mechanism", "SCRAM-SHA-256", "topics", "list", saslPassword="not-it")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("kafkaw: authentication with") and "invalid credentials" in wrong.stderr
    unknown = cli(*sasl, "--sasl-mechanism", "PLAIN", "--bootstrap", f"127.0.0.1:{saslBroker.openPort}", "topics", "list",
                  saslPassword=PASSWORD)  # the exempt endpoint takes no SASL
    assert unknown.returncode == 1 and "takes no SASL" in unknown.stderr


def test_confluentKafkaAdminClientManagesUsers(saslBroker):
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({**MODERN, "bootstrap.servers": f"127.0.0.1:{saslBroker.openPort}"})
    upsert = UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"dave-pass")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        assert future.result(10) is None
    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(10)  # users named: a future each
    infos = described.scram_credential_infos
    assert [(info.mechanism, info.iterations) for info in infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    grantTopic(saslBroker, "dave", "dave-topic")
    roundTrip(saslBroker.bootstrap, "dave-topic", **{**rdSasl("SCRAM-SHA-256", "dave-pass"), "sasl.username": "dave"})
    everyone = admin.describe_user_scram_credentials().result(10)  # None: one future of every user
    assert {"alice", "dave"} <= set(everyone)
    deletion = UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        assert future.result(10) is None
    with pytest.raises(KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials(["dave"])["dave"].result(10)


def test_kafkaPythonAdminClientManagesUsers(saslBroker):
    """kafka-python's own flexible-version codec against ours."""
    from kafka.admin import KafkaAdminClient
    from kafka.admin._users import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{saslBroker.openPort}")
    try:
        upsert = UserScramCredentialUpsertion("erin", ScramMechanism.SCRAM_SHA_512, "erin-pass")
        assert admin.alter_user_scram_credentials([upsert]) == {"erin": None}
        described = admin.describe_user_scram_credentials(["erin", "nobody"])
        assert described["erin"] == {"error": None, "credential_infos": [{"mechanism": ScramMechanism.SCRAM_SHA_512, "iterations": 4096}]}
        assert "does not exist" in described["nobody"]["error"]
        grantTopic(saslBroker, "erin", "erin-topic")
        roundTrip(saslBroker.bootstrap, "erin-topic", **{**rdSasl("SCRAM-SHA-512", "erin-pass"), "sasl.username": "erin"})
        deletion = UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_512)
        assert admin.alter_user_scram_credentials([deletion]) == {"erin": None}
        assert "does not exist" in admin.alter_user_scram_credentials([deletion])["erin"]
    finally:
        admin.close()
