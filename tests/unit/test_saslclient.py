"""The kafkaw command's SASL client: RFC 7677's SCRAM-SHA-256 example byte
for byte, whole exchanges against scramp's server (an independent SCRAM
implementation) and against the broker's own, and the failures it must catch."""

import base64

import pytest
from scramp import ScramMechanism

from kafkaw.broker import sasl
from kafkaw.saslclient import SaslError, ScramClient, plainToken
from tests.unit.test_sasl import Harness

# RFC 7677, section 3.
RFC_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc7677Example():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=RFC_NONCE)
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_anExchangeWithScrampsServer(mechanism):
    scram = ScramMechanism(mechanism)
    authInfo = scram.make_auth_info("pencil", iteration_count=4096)
    users = []
    server = scram.make_server(lambda user: users.append(user) or authInfo)
    client = ScramClient(mechanism, "us,er=x", "pencil")  # a name that needs escaping
    server.set_client_first(client.first().decode())
    assert users == ["us,er=x"]
    clientFinal = client.final(server.get_server_first().encode())
    server.set_client_final(clientFinal.decode())  # raises if the proof is wrong
    client.verify(server.get_server_final().encode())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_anExchangeWithTheBroker(mechanism):
    """A non-ASCII name and password: both sides hash the UTF-8 bytes, as Kafka does."""
    harness = Harness()
    harness.store.setScramCredential("zoë", mechanism, sasl.makeCredential("päss", mechanism))
    connection = harness.connect()
    assert connection.handshake(mechanism).errorCode == 0
    client = ScramClient(mechanism, "zoë", "päss")
    serverFirst = connection.authenticate(client.first())
    serverFinal = connection.authenticate(client.final(serverFirst.authBytes))
    assert serverFinal.errorCode == 0
    client.verify(serverFinal.authBytes)
    assert connection.gateway.principal == "User:zoë"


def test_aServerWithoutTheUsersKeysIsCaught():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=RFC_NONCE)
    client.final(RFC_SERVER_FIRST)
    forged = b"v=" + base64.b64encode(b"\0" * 32)
    with pytest.raises(SaslError, match="signature is wrong"):
        client.verify(forged)
    with pytest.raises(SaslError, match="refused: invalid-proof"):
        client.verify(b"e=invalid-proof")


@pytest.mark.parametrize(
    "serverFirst, why",
    [
        (b"r=someoneElsesNonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),  # nothing of the server's
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "4096"),
        (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=not base64!,i=4096", "unreadable"),
        (b"garbage", "unreadable"),
    ],
)
def test_aBadServerFirstMessageStopsTheExchange(serverFirst, why):
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=RFC_NONCE)
    with pytest.raises(SaslError, match=why):
        client.final(serverFirst)


def test_plainTokenIsTakenByTheBroker():
    assert plainToken("zoë", "päss") == b"\0zo\xc3\xab\0p\xc3\xa4ss"
    harness = Harness()
    harness.store.setScramCredential("zoë", "SCRAM-SHA-512", sasl.makeCredential("päss", "SCRAM-SHA-512"))
    connection = harness.connect()
    assert connection.handshake("PLAIN").errorCode == 0
    assert connection.authenticate(plainToken("zoë", "päss")).errorCode == 0
