"""The client's side of SASL PLAIN and SCRAM (RFC 5802, RFC 7677), for the C{kafkaw} command.

Messages only (bytes in, bytes out), no I/O: L{kafkaw.cli} carries them in
SaslHandshake v1 and SaslAuthenticate v1. Keys are derived as the broker
derives them (L{kafkaw.broker.sasl.saltedPassword}: PBKDF2 of the password's
UTF-8 bytes, as Kafka's clients do). The server's signature is checked, so a
server that does not hold the user's keys cannot pass for the broker.
"""

import base64
import hashlib
import hmac
import secrets

from kafkaw.broker.sasl import SCRAM_HASHES, saltedPassword


class SaslError(Exception):
    """The exchange cannot go on; the message says why."""


def plainToken(user, password):
    """RFC 4616's single message: no authorization id, the user, the password."""
    return b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")


def _saslName(user):
    return user.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """One SCRAM exchange: L{first}, then L{final} of the server-first
    message, then L{verify} of the server-final message."""

    def __init__(self, mechanism, user, password, nonce=None):
        self._mechanism = mechanism
        self._hashName = SCRAM_HASHES[mechanism]
        self._password = password
        self._nonce = nonce or secrets.token_urlsafe(24)
        self._clientFirstBare = f"n={_saslName(user)},r={self._nonce}"
        self._serverSignature = None

    def first(self):
        return ("n,," + self._clientFirstBare).encode("utf-8")

    def final(self, serverFirst):
        try:
            message = bytes(serverFirst).decode("utf-8")
            attributes = dict(part.split("=", 1) for part in message.split(","))
            nonce, salt, iterations = attributes["r"], base64.b64decode(attributes["s"], validate=True), int(attributes["i"])
        except (UnicodeDecodeError, ValueError, KeyError):
            raise SaslError(f"unreadable server-first message {bytes(serverFirst)[:100]!r}") from None
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("the server's nonce does not extend the client's")
        if iterations < 4096:
            raise SaslError(f"{iterations} iterations: fewer than RFC 7677's 4096")
        name = self._hashName
        salted = saltedPassword(self._password, self._mechanism, salt, iterations)
        clientKey = hmac.digest(salted, b"Client Key", name)
        withoutProof = f"c=biws,r={nonce}"
        authMessage = f"{self._clientFirstBare},{message},{withoutProof}".encode("utf-8")
        clientSignature = hmac.digest(hashlib.new(name, clientKey).digest(), authMessage, name)
        proof = bytes(a ^ b for a, b in zip(clientKey, clientSignature))
        self._serverSignature = hmac.digest(hmac.digest(salted, b"Server Key", name), authMessage, name)
        return f"{withoutProof},p={base64.b64encode(proof).decode('ascii')}".encode("utf-8")

    def verify(self, serverFinal):
        message = bytes(serverFinal).decode("utf-8", "replace")
        if message.startswith("e="):
            raise SaslError(f"the server refused: {message[2:]}")
        try:
            signature = base64.b64decode(message.removeprefix("v="), validate=True) if message.startswith("v=") else b""
        except ValueError:
            signature = b""
        if not hmac.compare_digest(signature, self._serverSignature):
            raise SaslError("the server's signature is wrong: it does not hold this user's keys")

