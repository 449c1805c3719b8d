"""SASL through the TCP protocol: StringTransport, task.Clock, a memory store
holding SCRAM credentials; the client side is scramp's ScramClient (an
implementation of RFC 5802 this project did not write) or hand-built bytes."""

import base64
import struct

import pytest
from scramp import ScramClient, ScramMechanism
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from kafkaw.broker.authorizer import AclAuthorizer
from kafkaw.broker import sasl
from kafkaw.broker.gateway import Broker
from kafkaw.broker.services import ClusterService
from kafkaw.metrics import PrometheusMetrics
from kafkaw.protocol import schema
from kafkaw.protocol.framing import frame
from kafkaw.storage.memory import MemoryStore
from kafkaw.transport.tcp import KafkaProtocol
from tests.unit.helpers import SchemaClient, responseFrames

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS, METADATA = 17, 36, 18, 3
MAX_REQUEST = 1 << 20


class Harness:
    """A broker whose endpoint requires SASL, user alice with password s3cret."""

    def __init__(self, firstDelay=0.1, maxDelay=3.2, **throttleOptions):
        self.clock = task.Clock()
        self.store = MemoryStore()
        for mechanism in sasl.SCRAM_MECHANISMS:
            self.store.setScramCredential("alice", mechanism, sasl.makeCredential("s3cret", mechanism))
        self.cluster = ClusterService(self.store, self.clock, brokerId=7)
        self.throttle = sasl.FailureThrottle(self.clock, firstDelay=firstDelay, maxDelay=maxDelay, **throttleOptions)
        self.authenticator = sasl.Authenticator(self.store, self.clock, self.throttle)
        self.broker = Broker(self.cluster, self.clock, authenticator=self.authenticator)
        self.metrics = self.broker.metrics = self.authenticator.metrics = PrometheusMetrics(self.cluster)

    def connect(self, host="10.0.0.1", authenticate=True):
        return Client(self.broker, host, authenticate, self.clock)

    def counted(self, mechanism, outcome):
        return self.metrics.registry.get_sample_value(
            "kafkaw_sasl_authentications_total", {"mechanism": mechanism, "outcome": outcome}
        ) or 0


class Client(SchemaClient):
    def __init__(self, broker, host, authenticate, clock):
        super().__init__()
        self.clock = clock
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        self.protocol = KafkaProtocol(broker, MAX_REQUEST, authenticate)
        self.protocol.makeConnection(self.transport)

    @property
    def gateway(self):
        return self.protocol.gateway

    @property
    def closed(self):
        """Whether the broker closed the connection, once the close delay after a failure has passed."""
        self.clock.advance(sasl.CLOSE_DELAY_AFTER_FAILURE)
        return self.transport.disconnecting

    def write(self, data):
        self.protocol.dataReceived(data)

    def sendRaw(self, payload):
        self.protocol.dataReceived(frame(payload))

    def rawResponses(self):
        frames = responseFrames(self.transport.value())
        self.transport.clear()
        return frames

    def handshake(self, mechanism, version=1):
        return self.call(SASL_HANDSHAKE, version, {"mechanism": mechanism})

    def authenticate(self, token, version=1):
        return self.call(SASL_AUTHENTICATE, version, {"authBytes": token})

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))


def plainToken(user, password, authorizationId=""):
    return f"{authorizationId}\0{user}\0{password}".encode()


def scramLogIn(client, mechanism, user="alice", password="s3cret", version=1):
    """A whole SCRAM exchange with scramp's client (handshake v1, SaslAuthenticate
    C{version}); returns (last response, scramp client)."""
    scram = ScramClient([mechanism], user, password)
    assert client.handshake(mechanism).errorCode == 0
    first = client.authenticate(scram.get_client_first().encode(), version)
    if first.errorCode:
        return first, scram
    scram.set_server_first(first.authBytes.decode())
    return client.authenticate(scram.get_client_final().encode(), version), scram


@pytest.fixture
def harness():
    return Harness()


# --- keys --------------------------------------------------------------------


def test_storedKeysFollowRfc7677sExample():
    """RFC 7677 section 3: user "user", password "pencil"; our keys make scramp's
    server answer exactly the RFC's server signature to the RFC's client proof."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credential = sasl.makeCredential("pencil", "SCRAM-SHA-256", 4096, salt)
    server = ScramMechanism("SCRAM-SHA-256").make_server(
        lambda user: tuple(credential), s_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    server.set_client_first("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert server.get_server_first() == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    server.set_client_final(
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert server.get_server_final() == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.mark.parametrize("mechanism", sasl.SCRAM_MECHANISMS)
def test_keysEqualScrampsForAnAsciiPassword(mechanism):
    salt = b"0123456789abcdef"
    assert tuple(sasl.makeCredential("s3cret", mechanism, 4096, salt)) == ScramMechanism(mechanism).make_auth_info("s3cret", 4096, salt)


def test_passwordMatchesOnlyItsOwnCredential():
    credential = sasl.makeCredential("s3cret", "SCRAM-SHA-512")
    assert sasl.passwordMatches("s3cret", "SCRAM-SHA-512", credential)
    assert not sasl.passwordMatches("s3cret!", "SCRAM-SHA-512", credential)
    assert credential.salt != sasl.makeCredential("s3cret", "SCRAM-SHA-512").salt  # a fresh salt each time


# --- frames ------------------------------------------------------------------


def test_handshakeV1BytesListTheMechanisms(harness):
    client = harness.connect()
    client.sendRaw(
        struct.pack(">hhi", SASL_HANDSHAKE, 1, 77)  # api key, version, correlation id
        + struct.pack(">h", 4) + b"test"  # client id
        + struct.pack(">h", 13) + b"SCRAM-SHA-256"  # mechanism
    )
    (response,) = client.rawResponses()
    assert response == (
        struct.pack(">i", 77)  # correlation id
        + struct.pack(">h", 0)  # error code
        + struct.pack(">i", 3)  # mechanisms: count
        + struct.pack(">h", 5) + b"PLAIN"
        + struct.pack(">h", 13) + b"SCRAM-SHA-256"
        + struct.pack(">h", 13) + b"SCRAM-SHA-512"
    )


def test_authenticateV1FailureBytes(harness):
    client = harness.connect()
    client.handshake("PLAIN")
    client.sendRaw(
        struct.pack(">hhi", SASL_AUTHENTICATE, 1, 9)  # api key, version, correlation id
        + struct.pack(">h", -1)  # null client id
        + struct.pack(">i", 13) + b"\0alice\0wrong!"  # auth bytes
    )
    (response,) = client.rawResponses()
    message = b"Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"
    assert response == (
        struct.pack(">i", 9)  # correlation id
        + struct.pack(">h", 58)  # SASL_AUTHENTICATION_FAILED
        + struct.pack(">h", len(message)) + message  # error message
        + struct.pack(">i", 0)  # auth bytes: empty
        + struct.pack(">q", 0)  # session lifetime (v1): no re-authentication
    )
    assert client.closed


def test_handshakeV0ThenBarePlainToken(harness):
    client = harness.connect()
    assert client.handshake("PLAIN", version=0).errorCode == 0
    client.sendRaw(plainToken("alice", "s3cret"))  # no request header
    assert client.rawResponses() == [b""]  # a bare, empty token
    assert client.gateway.principal == "User:alice"
    assert client.call(METADATA, 1, {"topics": []}).brokers[0].nodeId == 7


@pytest.mark.parametrize("mechanism", sasl.SCRAM_MECHANISMS)
def test_handshakeV0ThenBareScramTokens(harness, mechanism):
    client = harness.connect()
    scram = ScramClient([mechanism], "alice", "s3cret")
    assert client.handshake(mechanism, version=0).errorCode == 0
    client.sendRaw(scram.get_client_first().encode())
    (serverFirst,) = client.rawResponses()
    scram.set_server_first(serverFirst.decode())
    client.sendRaw(scram.get_client_final().encode())
    (serverFinal,) = client.rawResponses()
    scram.set_server_final(serverFinal.decode())  # raises unless the server proved it knows the key
    assert client.gateway.principal == "User:alice"


def test_handshakeV0WrongPasswordClosesUnanswered(harness):
    client = harness.connect()
    client.handshake("PLAIN", version=0)
    client.sendRaw(plainToken("alice", "nope"))
    assert client.rawResponses() == []
    assert client.closed
    assert client.gateway.principal == sasl.ANONYMOUS


# --- the state machine -------------------------------------------------------


def test_plainV1Authenticates(harness):
    client = harness.connect()
    assert client.gateway.principal == "User:ANONYMOUS"
    assert client.handshake("PLAIN").errorCode == 0
    response = client.authenticate(plainToken("alice", "s3cret"))
    assert (response.errorCode, response.errorMessage, response.authBytes, response.sessionLifetimeMs) == (0, None, b"", 0)
    assert client.gateway.principal == "User:alice"
    assert client.call(METADATA, 1, {"topics": []}).brokers[0].nodeId == 7
    assert harness.counted("PLAIN", "success") == 1


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("mechanism", sasl.SCRAM_MECHANISMS)
def test_scramAuthenticates(harness, mechanism, version):
    client = harness.connect()
    final, scram = scramLogIn(client, mechanism, version=version)
    assert final.errorCode == 0
    scram.set_server_final(final.authBytes.decode())
    assert client.gateway.principal == "User:alice"
    assert not client.closed
    assert harness.counted(mechanism, "success") == 1


@pytest.mark.parametrize("mechanism", sasl.SCRAM_MECHANISMS)
def test_scramWrongPasswordIsError58(harness, mechanism):
    client = harness.connect()
    final, _ = scramLogIn(client, mechanism, password="wrong")
    assert final.errorCode == 58
    assert final.errorMessage == f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    assert client.closed and client.gateway.principal == sasl.ANONYMOUS
    assert harness.counted(mechanism, "failure") == 1


def test_unknownScramUserLooksLikeAWrongPassword(harness):
    """An unknown user gets a salt and an iteration count too, and fails only at the proof."""
    client = harness.connect()
    scram = ScramClient(["SCRAM-SHA-256"], "mallory", "s3cret")
    client.handshake("SCRAM-SHA-256")
    first = client.authenticate(scram.get_client_first().encode())
    assert first.errorCode == 0 and ",i=4096" in first.authBytes.decode()
    scram.set_server_first(first.authBytes.decode())
    assert client.authenticate(scram.get_client_final().encode()).errorCode == 58


@pytest.mark.parametrize(
    "token, why",
    [
        (b"alice\0s3cret", "Invalid SASL/PLAIN token"),
        (b"\0\0s3cret", "empty user name"),
        (b"bob\0alice\0s3cret", "authorization id that is different"),
        (b"\0alice\0\xff", "Invalid SASL/PLAIN token"),
        (plainToken("nobody", "s3cret"), "invalid credentials"),
    ],
)
def test_badPlainTokens(harness, token, why):
    client = harness.connect()
    client.handshake("PLAIN")
    response = client.authenticate(token)
    assert response.errorCode == 58 and why in response.errorMessage
    assert client.closed


def test_malformedScramFirstMessage(harness):
    client = harness.connect()
    client.handshake("SCRAM-SHA-256")
    response = client.authenticate(b"n,,x=alice")
    assert response.errorCode == 58 and response.errorMessage.startswith("Invalid SCRAM-SHA-256 message")
    assert client.closed


def test_authenticatingAsSomeoneElseFails(harness):
    """A PLAIN token for alice asking to act as admin is refused: no identity switch."""
    client = harness.connect()
    client.handshake("PLAIN")
    assert client.authenticate(plainToken("alice", "s3cret", authorizationId="admin")).errorCode == 58


def test_onlyApiVersionsAndSaslBeforeAuthentication(harness):
    client = harness.connect()
    assert client.call(API_VERSIONS, 2, {}).errorCode == 0
    client.send(METADATA, 1, {"topics": []})
    assert client.rawResponses() == []
    assert client.closed


def test_unsupportedMechanismIsError33AndCloses(harness):
    client = harness.connect()
    response = client.handshake("GSSAPI")
    assert (response.errorCode, response.mechanisms) == (33, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    assert client.closed


@pytest.mark.parametrize("first", ["authenticate", "second handshake"])
def test_wrongOrderIsError34AndCloses(harness, first):
    client = harness.connect()
    if first == "authenticate":
        response = client.authenticate(plainToken("alice", "s3cret"))
    else:
        client.handshake("PLAIN")
        response = client.handshake("PLAIN")
    assert response.errorCode == 34
    assert client.closed and client.gateway.principal == sasl.ANONYMOUS


def test_saslOnceAuthenticatedIsError34AndKeepsTheConnection(harness):
    client = harness.connect()
    client.handshake("PLAIN")
    client.authenticate(plainToken("alice", "s3cret"))
    assert client.handshake("PLAIN").errorCode == 34
    assert client.authenticate(b"x").errorCode == 34
    assert not client.closed and client.gateway.principal == "User:alice"


def test_anEndpointWithoutSaslAnswers34AndServesAnyone(harness):
    client = harness.connect(authenticate=False)
    assert client.handshake("PLAIN").errorCode == 34
    assert client.call(METADATA, 1, {"topics": []}).brokers[0].nodeId == 7
    assert client.gateway.principal == sasl.ANONYMOUS and not client.closed


def test_framesAreSmallUntilAuthenticated(harness):
    client = harness.connect()
    client.protocol.dataReceived(struct.pack(">i", sasl.MAX_UNAUTHENTICATED_REQUEST_BYTES + 1))
    assert client.closed
    other = harness.connect()
    other.handshake("PLAIN")
    other.authenticate(plainToken("alice", "s3cret"))
    other.send(METADATA, 1, {"topics": ["x" * 30000, "y" * 30000, "z" * 10000]})  # > 64 KB, after authentication
    assert not other.closed


# --- slowing down guesses ----------------------------------------------------


def guessWrong(harness, host):
    client = harness.connect(host)
    client.handshake("PLAIN")
    client.send(SASL_AUTHENTICATE, 1, {"authBytes": plainToken("alice", "guess")})
    return client


def test_guessesFromOneHostTakeAtLeastTheSumOfDelays():
    harness = Harness(firstDelay=0.1, maxDelay=3.2)
    guesses = 20
    start = harness.clock.seconds()
    answered = 0
    while answered < guesses:
        client = guessWrong(harness, "10.0.0.66")
        while not client.responses():
            harness.clock.advance(0.01)
        answered += 1
    minimum = harness.throttle.minimumSeconds(guesses)
    assert minimum == pytest.approx(0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 * 14)
    assert harness.clock.seconds() - start >= minimum - 1e-6
    assert harness.counted("PLAIN", "failure") == guesses


def test_parallelGuessesAreCheckedOneAfterAnother():
    """Many connections at once from one host gain nothing: each waits for the one before."""
    harness = Harness(firstDelay=0.1, maxDelay=3.2)
    guessWrong(harness, "10.0.0.66").responses()  # a first failure
    clients = [guessWrong(harness, "10.0.0.66") for _ in range(5)]
    assert [c.responses() for c in clients] == [[]] * 5
    harness.clock.advance(0.1 + 0.2 + 0.4 + 0.8 + 1.6 - 0.01)
    assert sum(bool(c.responses()) for c in clients) == 4
    harness.clock.advance(0.02)
    assert all(c.closed for c in clients)


def test_anotherHostIsServedAtOnceMeanwhile():
    harness = Harness(firstDelay=0.1, maxDelay=3.2)
    for _ in range(6):
        guessWrong(harness, "10.0.0.66")
        harness.clock.advance(10)
    waiting = guessWrong(harness, "10.0.0.66")  # waits 3.2 s before its check
    honest = harness.connect("10.0.0.2")
    honest.handshake("PLAIN")
    assert honest.authenticate(plainToken("alice", "s3cret")).errorCode == 0  # no clock advance needed
    assert honest.call(METADATA, 1, {"topics": []}).brokers[0].nodeId == 7
    assert waiting.responses() == []
    harness.clock.advance(3.2)
    assert waiting.responses()[0].errorCode == 58


def test_theRightPasswordAlsoWaitsAfterFailures():
    """Otherwise a guesser would not need to wait for its failures to learn the answer."""
    harness = Harness(firstDelay=0.1, maxDelay=3.2)
    guessWrong(harness, "10.0.0.66")
    client = harness.connect("10.0.0.66")
    client.handshake("PLAIN")
    client.send(SASL_AUTHENTICATE, 1, {"authBytes": plainToken("alice", "s3cret")})
    assert client.responses() == []
    harness.clock.advance(0.1)
    assert client.responses()[0].errorCode == 0


def test_aWaitBeyondMaxWaitIsRefusedUnchecked():
    harness = Harness(firstDelay=1.0, maxDelay=4.0, maxWait=10.0)
    guessWrong(harness, "10.0.0.66").responses()
    clients = [guessWrong(harness, "10.0.0.66") for _ in range(4)]  # wait 1, 1+2, 3+4, 7+4 > 10
    refused = clients[-1].responses()
    assert refused[0].errorCode == 58 and "Too many failed authentication attempts" in refused[0].errorMessage
    assert clients[-1].closed
    assert harness.counted("PLAIN", "failure") == 1  # the refused one was not checked


def test_failuresAreForgottenAfterAQuietPeriod():
    harness = Harness(firstDelay=0.1, maxDelay=3.2, forgetAfter=600)
    guessWrong(harness, "10.0.0.66")
    harness.clock.advance(601)
    assert harness.throttle.admit("10.0.0.66") == 0.0


def test_theHostTableIsBounded():
    throttle = sasl.FailureThrottle(task.Clock(), maxHosts=3)
    for number in range(10):
        host = f"10.0.0.{number}"
        throttle.admit(host)
        throttle.finished(host, False)
    assert len(throttle) == 3


def test_aConnectionLostWhileWaitingFreesItsTurn(harness):
    guessWrong(harness, "10.0.0.66").responses()
    client = guessWrong(harness, "10.0.0.66")  # waiting 0.1 s
    client.lose()
    assert harness.counted("PLAIN", "failure") == 1
    harness.clock.advance(1)  # its timer was cancelled: nothing runs for it
    assert harness.counted("PLAIN", "failure") == 1
    assert harness.throttle.admit("10.0.0.66") == pytest.approx(0.1)  # one failure, no attempt under way


# --- what clients send that scramp's client does not ---------------------------


def test_librdkafkasRepeatedClientNonceIsAcceptedAsKafkaDoes(harness):
    """librdkafka < 2.6.1 sends r=<client nonce><client nonce + server nonce>
    in client-final (kcat 1.7.1 on Debian: librdkafka 2.0.2); Kafka >= 3.8.1
    accepts a nonce that ends with the combined one, and so does kafkaw.
    The proof is over the message as sent; built here by hand."""
    import hashlib
    import hmac

    client = harness.connect()
    client.handshake("SCRAM-SHA-256")
    bare = "n=alice,r=clientnonce"
    serverFirst = client.authenticate(f"n,,{bare}".encode()).authBytes.decode()
    attributes = dict(part.split("=", 1) for part in serverFirst.split(","))
    assert attributes["r"].startswith("clientnonce") and len(attributes["r"]) > len("clientnonce")
    withoutProof = f"c=biws,r=clientnonce{attributes['r']}"
    salted = hashlib.pbkdf2_hmac("sha256", b"s3cret", base64.b64decode(attributes["s"]), int(attributes["i"]))
    clientKey = hmac.digest(salted, b"Client Key", "sha256")
    authMessage = f"{bare},{serverFirst},{withoutProof}".encode()
    signature = hmac.digest(hashlib.sha256(clientKey).digest(), authMessage, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(clientKey, signature))).decode()
    final = client.authenticate(f"{withoutProof},p={proof}".encode())
    assert final.errorCode == 0 and client.gateway.principal == "User:alice"
    serverKey = hmac.digest(salted, b"Server Key", "sha256")
    assert final.authBytes == b"v=" + base64.b64encode(hmac.digest(serverKey, authMessage, "sha256"))


@pytest.mark.parametrize(
    "clientFinal",
    [
        "c=biws,r=someoneelsesnonce,p=AAAA",  # not the server's nonce: a replay
        "c=eSws,r={nonce},p={proof}",  # binding says y,, but the header was n,,
        "r={nonce},c=biws,p={proof}",  # out of order
        "c=biws,r={nonce}",  # no proof
        "c=biws,r={nonce},p=!!!",  # proof not base64
        "c=biws,r={nonce},p=AAAA",  # proof of the wrong length
    ],
)
def test_badClientFinalMessagesFail(harness, clientFinal):
    client = harness.connect()
    scram = ScramClient(["SCRAM-SHA-256"], "alice", "s3cret")
    client.handshake("SCRAM-SHA-256")
    first = client.authenticate(scram.get_client_first().encode())
    scram.set_server_first(first.authBytes.decode())
    good = dict(part.split("=", 1) for part in scram.get_client_final().split(","))
    response = client.authenticate(clientFinal.format(nonce=good["r"], proof=good["p"]).encode())
    assert response.errorCode == 58 and "invalid credentials" in response.errorMessage
    assert client.closed


@pytest.mark.parametrize(
    "clientFirst, why",
    [
        ("p=tls-unique,,n=alice,r=abc", "channel binding is not supported"),
        ("n,a=bob,n=alice,r=abc", "authorization id"),
        ("n,,n=alice,r=abc,tokenauth=true", "malformed client-first-message"),
        ("n,,r=abc,n=alice", "must start with n=user,r=nonce"),
        ("n,,n=al=ice,r=abc", "'=' not followed by 2C or 3D"),
        ("n,,n=alice,r=a\x01c", "not printable ASCII"),
    ],
)
def test_badClientFirstMessagesFail(harness, clientFirst, why):
    client = harness.connect()
    client.handshake("SCRAM-SHA-256")
    response = client.authenticate(clientFirst.encode())
    assert response.errorCode == 58 and why in response.errorMessage
    assert client.closed


def test_anEscapedUserName(harness):
    harness.store.setScramCredential("a,b=c", "SCRAM-SHA-512", sasl.makeCredential("pw", "SCRAM-SHA-512"))
    client = harness.connect()
    final, scram = scramLogIn(client, "SCRAM-SHA-512", user="a,b=c", password="pw")
    assert final.errorCode == 0 and client.gateway.principal == "User:a,b=c"


# --- DescribeUserScramCredentials / AlterUserScramCredentials (Kafka 2.7's v0, flexible) ---

DESCRIBE_USERS, ALTER_USERS = 50, 51


def saltedPassword(password, mechanism, salt, iterations):
    import hashlib

    return hashlib.pbkdf2_hmac({"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism], password.encode(), salt, iterations)


@pytest.fixture
def admin(harness):
    """A connection to an endpoint without SASL (as --sasl-exempt leaves one), where users are managed."""
    harness.broker.credentials = harness.store
    return harness.connect(authenticate=False)


def test_describeEveryUser(harness, admin):
    response = admin.call(DESCRIBE_USERS, 0, {"users": None})
    assert (response.errorCode, [(r.user, r.errorCode, [(i.mechanism, i.iterations) for i in r.credentialInfos]) for r in response.results]) == (
        0, [("alice", 0, [(1, 4096), (2, 4096)])],
    )


def test_describeNamedUsers(harness, admin):
    response = admin.call(DESCRIBE_USERS, 0, {"users": [{"name": "alice"}, {"name": "nobody"}, {"name": "twice"}, {"name": "twice"}]})
    assert [(r.user, r.errorCode) for r in response.results] == [("alice", 0), ("nobody", 91), ("twice", 92), ("twice", 92)]


def test_alterThenLogInWithTheNewPassword(harness, admin):
    salt = b"0123456789abcdef"
    response = admin.call(ALTER_USERS, 0, {
        "deletions": [{"name": "alice", "mechanism": 2}],
        "upsertions": [{"name": "bob", "mechanism": 1, "iterations": 8192, "salt": salt,
                        "saltedPassword": saltedPassword("hunter2", "SCRAM-SHA-256", salt, 8192)}],
    })
    assert [(r.user, r.errorCode, r.errorMessage) for r in response.results] == [("alice", 0, None), ("bob", 0, None)]
    assert sorted(harness.store.scramCredentials()["alice"]) == ["SCRAM-SHA-256"]
    client = harness.connect()
    final, scram = scramLogIn(client, "SCRAM-SHA-256", user="bob", password="hunter2")
    assert final.errorCode == 0 and client.gateway.principal == "User:bob"
    plain = harness.connect()
    plain.handshake("PLAIN")
    assert plain.authenticate(plainToken("bob", "hunter2")).errorCode == 0


@pytest.mark.parametrize(
    "change, error",
    [
        ({"upsertions": [{"name": "bob", "mechanism": 1, "iterations": 100, "salt": b"s", "saltedPassword": b"p" * 32}]}, 93),
        ({"upsertions": [{"name": "bob", "mechanism": 1, "iterations": 20000, "salt": b"s", "saltedPassword": b"p" * 32}]}, 93),
        ({"upsertions": [{"name": "bob", "mechanism": 1, "iterations": 4096, "salt": b"s", "saltedPassword": b"p" * 31}]}, 93),
        ({"upsertions": [{"name": "bob", "mechanism": 3, "iterations": 4096, "salt": b"s", "saltedPassword": b"p" * 32}]}, 33),
        ({"upsertions": [{"name": "", "mechanism": 1, "iterations": 4096, "salt": b"s", "saltedPassword": b"p" * 32}]}, 93),
        ({"deletions": [{"name": "bob", "mechanism": 1}]}, 91),
        ({"deletions": [{"name": "bob", "mechanism": 1}], "upsertions": [{"name": "bob", "mechanism": 1, "iterations": 4096, "salt": b"s", "saltedPassword": b"p" * 32}]}, 91),
    ],
)
def test_aBadChangeRefusesTheUsersChangesOnly(harness, admin, change, error):
    good = {"name": "carol", "mechanism": 2, "iterations": 4096, "salt": b"s", "saltedPassword": b"p" * 64}
    request = {"deletions": change.get("deletions", []), "upsertions": change.get("upsertions", []) + [good]}
    results = {r.user: r.errorCode for r in admin.call(ALTER_USERS, 0, request).results}
    name = (change.get("upsertions") or change.get("deletions"))[0]["name"]
    assert results == {name: error, "carol": 0}
    assert name not in harness.store.scramCredentials() and "carol" in harness.store.scramCredentials()


def test_onlyWhomTheAclsLetMayManageUsers(harness):
    """With ACLs enforced, a principal without Describe/Alter on the Cluster
    gets 31 (an exempt endpoint's User:ANONYMOUS too): no user can change
    another's password; a super user may."""
    harness.broker.credentials = harness.store
    harness.broker.authorizer = AclAuthorizer(harness.store, superUsers=["User:alice"])
    anonymous = harness.connect(authenticate=False)
    assert anonymous.call(DESCRIBE_USERS, 0, {"users": None}).errorCode == 31
    response = anonymous.call(ALTER_USERS, 0, {"deletions": [{"name": "alice", "mechanism": 1}], "upsertions": []})
    assert [(r.user, r.errorCode) for r in response.results] == [("alice", 31)]
    assert "SCRAM-SHA-256" in harness.store.scramCredentials()["alice"]
    alice = harness.connect()
    alice.handshake("PLAIN")
    alice.authenticate(plainToken("alice", "s3cret"))
    assert alice.call(DESCRIBE_USERS, 0, {"users": None}).errorCode == 0


def test_userApisBeforeAuthenticationClose(harness):
    client = harness.connect()
    client.send(DESCRIBE_USERS, 0, {"users": None})
    assert client.rawResponses() == [] and client.closed


# --- twistd kafkaw options ---------------------------------------------------------


def parsed(*argv):
    from kafkaw import tap

    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_saslOptions():
    options = parsed("--sasl", "--listen", "tcp:1", "--listen", "unix:/tmp/k", "--sasl-exempt", "unix:/tmp/k", "--sasl-failure-delay-ms", "50")
    assert (options["sasl"], options["sasl-exempt"], options["sasl-failure-delay-ms"]) == (True, ["unix:/tmp/k"], 50)
    assert not parsed()["sasl"]


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--sasl-exempt", "tcp:1"], "--sasl-exempt needs --sasl"),
        (["--sasl", "--listen", "tcp:1", "--sasl-exempt", "tcp:2"], "names no --listen or --websocket endpoint: tcp:2"),
        (["--sasl", "--strict-0.8"], "Kafka 0.8.0 had no SASL"),
        (["--sasl", "--sasl-failure-delay-ms", "0"], "sasl-failure-delay-ms"),
    ],
)
def test_badSaslOptions(argv, why):
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match=why):
        parsed(*argv)


def test_theServiceRequiresSaslOnEveryEndpointButTheExemptOnes(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from kafkaw import tap

    options = parsed(
        "--storage", "memory", "--sasl", "--listen", "tcp:19001", "--listen", "tcp:19002",
        "--websocket", "tcp:19003", "--sasl-exempt", "tcp:19002", "--data-dir", str(tmp_path),
    )
    service = tap.makeService(options, reactor=MemoryReactorClock())
    factories = {}
    for child in service:
        factory = getattr(child, "factory", None)
        if factory is not None and hasattr(factory, "authenticate"):
            factories[child.endpoint._port] = factory.authenticate
    assert factories == {19001: True, 19002: False, 19003: True}
    assert {type(f).__name__ for f in (c.factory for c in service if hasattr(getattr(c, "factory", None), "authenticate"))} == {"KafkaFactory", "KafkaWebSocketFactory"}


# --- over WebSocket ------------------------------------------------------------------


def webSocketSasl():
    from twisted.internet.testing import MemoryReactorClock

    from tests.unit.test_websocket import WebSocketPair

    clock = MemoryReactorClock()
    store = MemoryStore()
    store.setScramCredential("alice", "SCRAM-SHA-256", sasl.makeCredential("s3cret", "SCRAM-SHA-256"))
    broker = Broker(ClusterService(store, clock), clock, authenticator=sasl.Authenticator(store, clock))
    return WebSocketPair(broker=broker, clock=clock, authenticate=True)


def wsCall(pair, apiKey, version, value, correlationId=1):
    (message,) = pair.exchange(frame(schema.encodeRequest(apiKey, version, correlationId, "ws", value)))
    return schema.decodeResponse(apiKey, version, message[4:])[1]


def test_saslOverWebSocket():
    pair = webSocketSasl()
    assert wsCall(pair, SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).errorCode == 0
    assert wsCall(pair, SASL_AUTHENTICATE, 1, {"authBytes": plainToken("alice", "s3cret")}).errorCode == 0
    assert pair.server.gateway.principal == "User:alice"
    big = ["x" * 40000, "y" * 40000]  # a request above 64 KB, fine once authenticated
    assert wsCall(pair, METADATA, 1, {"topics": big}).brokers[0].host == "10.0.0.5"


def test_webSocketBeforeAuthentication():
    pair = webSocketSasl()
    assert pair.exchange(frame(schema.encodeRequest(METADATA, 1, 1, "ws", {"topics": []}))) == []
    pair.closeAfter()
    assert pair.client.closed[1] == 1008  # a request before authentication: rejected
    pair = webSocketSasl()
    pair.exchange(frame(schema.encodeRequest(SASL_AUTHENTICATE, 1, 1, "ws", {"authBytes": b"x" * 70000})))
    pair.closeAfter()
    assert pair.client.closed[1] == 1009  # a message above 64 KB before authentication


def test_theCloseAfterAFailureWaitsALittle(harness):
    """The answer goes at once, the close 100 ms later (Kafka's
    connection.failed.authentication.delay.ms), so a client reading both at
    once does not lose the answer."""
    client = harness.connect()
    client.handshake("PLAIN")
    assert client.authenticate(plainToken("alice", "wrong")).errorCode == 58
    assert not client.transport.disconnecting
    harness.clock.advance(0.099)
    assert not client.transport.disconnecting
    harness.clock.advance(0.001)
    assert client.transport.disconnecting


def test_aConnectionLostBeforeTheDelayedClose(harness):
    client = harness.connect()
    client.handshake("GSSAPI")  # error 33: closing in 100 ms
    assert len(harness.clock.getDelayedCalls()) == 2  # that close, and the gateway's idle timer
    client.lose()
    assert harness.clock.getDelayedCalls() == []  # both cancelled


def test_failuresAreLoggedWithThePeerAndTheUser(harness):
    from twisted.logger import capturedLogs, formatEvent

    with capturedLogs() as events:
        client = harness.connect("10.0.0.77")
        client.handshake("PLAIN")
        client.authenticate(plainToken("alice", "wrong"))
    lines = [formatEvent(event) for event in events]
    assert any("SASL PLAIN authentication failed for" in line and "10.0.0.77" in line and "'alice'" in line for line in lines)


def test_aThousandGuessesTakeTheDocumentedMinimum():
    """docs/security.md: with the defaults (100 ms doubling up to 3.2 s), 1,000
    wrong passwords from one host take at least 3,184 s; meanwhile another
    host authenticates without waiting."""
    harness = Harness(firstDelay=0.1, maxDelay=3.2)
    start = harness.clock.seconds()
    for number in range(1000):
        client = guessWrong(harness, "10.0.0.66")
        while not client.responses():
            pending = [call.getTime() for call in harness.clock.getDelayedCalls()]
            harness.clock.advance(min(pending) - harness.clock.seconds())  # straight to the next timer
        client.lose()
        if number == 500:
            honest = harness.connect("10.0.0.2")
            before = harness.clock.seconds()
            final, _ = scramLogIn(honest, "SCRAM-SHA-256")
            assert final.errorCode == 0 and harness.clock.seconds() == before  # no clock advance needed
    elapsed = harness.clock.seconds() - start
    assert harness.throttle.minimumSeconds(1000) == pytest.approx(3183.9)
    assert elapsed >= 3183.9 - 1e-6
    assert harness.counted("PLAIN", "failure") == 1000
