"""SASL authentication in the Kafka protocol: SaslHandshake v0-1, SaslAuthenticate v0-1,
mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802 / RFC 7677).

An endpoint served with C{--sasl} gives each connection a L{SaslSession}: until
it authenticates, the gateway serves only ApiVersions and the SASL APIs and
closes the connection on anything else, as Kafka does. Handshake v1 carries
the mechanism's tokens in SaslAuthenticate requests; handshake v0 (older
clients) carries them as bare size-prefixed frames with no request header,
answered the same way (L{SaslSession.expectsRawToken}).

Credentials are SCRAM salted keys from an L{ICredentialStore}, never
passwords. PLAIN derives the stored key from the password it is given with
the stored salt and iteration count and compares in constant time; the
derivation (PBKDF2, ~ms) runs off the reactor. Everything is the stdlib's
(C{hashlib.pbkdf2_hmac}, C{hmac.compare_digest}), not a SCRAM library:
keys come from the password's UTF-8 bytes, as Kafka's ScramFormatter makes
them (scramp would SASLprep them first, which differs for some non-ASCII
passwords), and the exchange must accept librdkafka's nonce quirk as Kafka
does (L{_ScramExchange}); scramp's client is the tests' independent oracle.

Guessing is slowed per client host (L{FailureThrottle}): once a host has
failed, each of its next attempts waits, before its password is even looked
at, for a delay that doubles per recent failure (and per attempt of the host
still under way), one attempt of a host after another; so N guesses from one
host take at least the sum of those delays however many connections they use,
while other hosts and authenticated connections are served meanwhile.
"""

import base64
import collections
import hashlib
import hmac
import os
import secrets

from twisted.internet import defer
from twisted.logger import Logger

from kafkaw.protocol import schema
from kafkaw.protocol.definitions import SASL_AUTHENTICATE, SASL_HANDSHAKE
from kafkaw.protocol.errors import ErrorCode
from kafkaw.storage.interfaces import SCRAM_MECHANISMS, ScramCredential

log = Logger()

PLAIN = "PLAIN"
MECHANISMS = (PLAIN, *SCRAM_MECHANISMS)
ANONYMOUS = "User:ANONYMOUS"
# What a connection may send before it has authenticated: ApiVersions and the SASL APIs.
PRE_AUTHENTICATION_APIS = frozenset({18, SASL_HANDSHAKE.key, SASL_AUTHENTICATE.key})
# Largest request frame read before authentication (Kafka's sasl.server.max.receive.size
# is 512 KB): ApiVersions and SASL tokens are a few hundred bytes.
MAX_UNAUTHENTICATED_REQUEST_BYTES = 64 * 1024
DEFAULT_ITERATIONS = 4096  # Kafka's minimum for SCRAM-SHA-256/512
CLOSE_DELAY_AFTER_FAILURE = 0.1  # seconds; Kafka's connection.failed.authentication.delay.ms is 100
SALT_BYTES = 32
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}  # hashlib's names
_PLAIN_CREDENTIAL = "SCRAM-SHA-256"  # PLAIN checks this one (else SCRAM-SHA-512)


class AuthenticationFailed(Exception):
    """The client did not authenticate; the message is what it is told."""


def invalidCredentials(mechanism):
    return AuthenticationFailed(
        f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )


def saltedPassword(password, mechanism, salt, iterations):
    """RFC 5802's SaltedPassword: PBKDF2 of C{password}'s UTF-8 bytes (as Kafka's ScramFormatter)."""
    return hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], password.encode("utf-8"), salt, iterations)


def makeCredential(password, mechanism, iterations=DEFAULT_ITERATIONS, salt=None):
    """The L{ScramCredential} of C{password} (a C{str}) for a SCRAM C{mechanism}."""
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    name = SCRAM_HASHES[mechanism]
    salted = saltedPassword(password, mechanism, salt, iterations)
    storedKey = hashlib.new(name, hmac.digest(salted, b"Client Key", name)).digest()
    return ScramCredential(salt, storedKey, hmac.digest(salted, b"Server Key", name), iterations)


def passwordMatches(password, mechanism, credential):
    """Whether C{password} derives C{credential}'s stored key (compared in constant time)."""
    derived = makeCredential(password, mechanism, credential.iterations, credential.salt)
    return hmac.compare_digest(derived.storedKey, credential.storedKey)


class FailureThrottle:
    """Per client host: how long its next authentication attempt must wait.

    An attempt is admitted with L{admit} before its credentials are checked and
    ends with L{finished}. A host's level is its failures in the last
    C{forgetAfter} seconds plus its attempts under way; at level n > 0 an
    attempt waits C{firstDelay * 2**(n-1)} (at most C{maxDelay}) after the
    host's previous waiting attempt, so a host's attempts are checked one
    after another. Hosts are kept in least-recently-failed order, at most
    C{maxHosts} of them (the oldest is forgotten).
    """

    def __init__(self, clock, firstDelay=0.1, maxDelay=3.2, forgetAfter=600.0, maxWait=60.0, maxHosts=10000):
        self.clock = clock
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
        self.maxWait = maxWait
        self.maxHosts = maxHosts
        self._hosts = collections.OrderedDict()  # host -> [recent failures, attempts under way, last failure, next free time]

    def delay(self, level):
        """Seconds an attempt at C{level} waits (0 at level 0)."""
        if level <= 0:
            return 0.0
        return min(self.firstDelay * 2 ** min(level - 1, 64), self.maxDelay)

    def minimumSeconds(self, attempts):
        """The least time C{attempts} failed attempts from one host take, one after another."""
        return sum(self.delay(level) for level in range(attempts))

    def _entry(self, host, now):
        entry = self._hosts.get(host)
        if entry is not None and entry[1] == 0 and now - entry[2] > self.forgetAfter:
            entry = None
            del self._hosts[host]
        return entry

    def admit(self, host):
        """Seconds until an attempt from C{host} may be checked, or None: it
        would wait longer than C{maxWait}, refuse it unchecked."""
        now = self.clock.seconds()
        entry = self._entry(host, now)
        if entry is None:
            entry = [0, 0, now, now]
            self._hosts[host] = entry
            while len(self._hosts) > self.maxHosts:
                self._hosts.popitem(last=False)
        level = entry[0] + entry[1]
        if level == 0:
            entry[1] += 1
            return 0.0
        readyAt = max(now, entry[3]) + self.delay(level)
        if readyAt - now > self.maxWait:
            return None
        entry[1] += 1
        entry[3] = readyAt
        return readyAt - now

    def finished(self, host, succeeded):
        """An attempt L{admit} let through is decided (or abandoned: C{succeeded} None)."""
        entry = self._hosts.get(host)
        if entry is None:
            return  # forgotten meanwhile (C{maxHosts})
        entry[1] = max(entry[1] - 1, 0)
        if succeeded is False:
            entry[0] += 1
            entry[2] = self.clock.seconds()
            self._hosts.move_to_end(host)

    def __len__(self):
        return len(self._hosts)


class Authenticator:
    """What every SASL connection of a broker shares: credentials, throttle, metrics."""

    def __init__(self, credentials, clock, throttle=None, offReactor=defer.maybeDeferred, metrics=None, mechanisms=MECHANISMS):
        self.credentials = credentials  # an ICredentialStore
        self.clock = clock
        self.throttle = throttle if throttle is not None else FailureThrottle(clock)
        self.offReactor = offReactor
        self.metrics = metrics  # an IBrokerMetrics, or None
        self.mechanisms = tuple(mechanisms)
        # Answers for unknown users look like any other user's: a salt
        # derived from the name with a secret of this process.
        self._fakeSecret = os.urandom(32)

    def credentialFor(self, user, mechanism):
        """The user's stored credential, or a made-up one that matches no password."""
        credential = self.credentials.scramCredential(user, mechanism)
        if credential is not None:
            return credential, True
        digest = hmac.digest(self._fakeSecret, f"{mechanism}\0{user}".encode("utf-8"), "sha512")
        size = hashlib.new(SCRAM_HASHES[mechanism]).digest_size
        return ScramCredential(digest[:SALT_BYTES], digest[:size], digest[-size:], DEFAULT_ITERATIONS), False

    def plainCredential(self, user):
        for mechanism in (_PLAIN_CREDENTIAL, *SCRAM_MECHANISMS):
            credential = self.credentials.scramCredential(user, mechanism)
            if credential is not None:
                return mechanism, credential, True
        return (_PLAIN_CREDENTIAL, *self.credentialFor(user, _PLAIN_CREDENTIAL))

    def counted(self, mechanism, succeeded):
        if self.metrics is not None:
            self.metrics.authenticationDone(mechanism, succeeded)


class _PlainExchange:
    """RFC 4616: one token, [authzid] NUL authcid NUL passwd; no challenge."""

    def __init__(self, authenticator):
        self.authenticator = authenticator
        self.user = None  # for the broker's log

    def step(self, token):
        try:
            authorizationId, user, password = bytes(token).decode("utf-8").split("\0")
        except ValueError:
            return defer.fail(AuthenticationFailed("Invalid SASL/PLAIN token: expected [authzid] NUL authcid NUL passwd"))
        if not user or not password:
            return defer.fail(AuthenticationFailed("Invalid SASL/PLAIN token: empty user name or password"))
        if authorizationId and authorizationId != user:
            return defer.fail(AuthenticationFailed("Authentication failed: Client requested an authorization id that is different from username"))
        self.user = user
        mechanism, credential, known = self.authenticator.plainCredential(user)

        def checked(matches):
            if matches and known:
                return b"", user
            raise invalidCredentials(PLAIN)

        # PBKDF2 even for an unknown user, so timing does not tell who exists.
        return self.authenticator.offReactor(passwordMatches, password, mechanism, credential).addCallback(checked)


class _RefusedMessage(ValueError):
    """A SCRAM message that breaks RFC 5802's grammar (or Kafka's use of it)."""


def _attributes(text, what):
    """RFC 5802 attributes ("a=value" joined by commas) -> [(name, value)]."""
    pairs = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not ("a" <= part[0] <= "z" or "A" <= part[0] <= "Z"):
            raise _RefusedMessage(f"malformed {what}: attribute {part[:20]!r}")
        pairs.append((part[0], part[2:]))
    return pairs


def _saslName(value):
    """Undo RFC 5802's escaping of ',' (=2C) and '=' (=3D) in a user name."""
    if value.replace("=2C", "").replace("=3D", "").count("="):
        raise _RefusedMessage("malformed user name: '=' not followed by 2C or 3D")
    return value.replace("=2C", ",").replace("=3D", "=")


class _ScramExchange:
    """RFC 5802: client-first -> server-first, client-final -> server-final.

    Written on the stdlib rather than a SCRAM library: it must accept what
    Kafka accepts. librdkafka before 2.6.1 (kcat 1.7.1 on Debian has 2.0.2)
    sends its own nonce again in front of the combined one in client-final;
    Kafka 2.3.0 did not check that nonce at all, and Kafka since 3.8.1 checks
    that it *ends with* the combined nonce, which is what is done here (a
    replayed exchange still fails: the server part is new each time). The
    proof is checked over the message as the client sent it, in constant time.
    Channel binding (SCRAM-...-PLUS, gs2 flag p) is refused, as Kafka does;
    so is Kafka's delegation-token extension (C{tokenauth=true}: not a
    one-letter attribute).
    """

    def __init__(self, authenticator, mechanism):
        self.authenticator = authenticator
        self.mechanism = mechanism
        self.hashName = SCRAM_HASHES[mechanism]
        self.user = None
        self.known = False
        self.refusal = None  # why the client-final message was refused: for the broker's log, not the client
        self._credential = None
        self._gs2Header = None
        self._clientFirstBare = None
        self._serverFirst = None
        self._nonce = None

    def step(self, token):
        try:
            message = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            return defer.fail(AuthenticationFailed(f"Invalid {self.mechanism} message: not UTF-8"))
        if self._serverFirst is None:
            try:
                return defer.succeed((self._clientFirst(message).encode("utf-8"), None))
            except _RefusedMessage as e:
                return defer.fail(AuthenticationFailed(f"Invalid {self.mechanism} message: {e}"))
        try:
            serverFinal = self._clientFinal(message)
        except _RefusedMessage as e:
            self.refusal = str(e)
            return defer.fail(invalidCredentials(self.mechanism))
        if not self.known:  # a made-up credential is matched only by a 2**-256 chance
            return defer.fail(invalidCredentials(self.mechanism))
        return defer.succeed((serverFinal.encode("utf-8"), self.user))

    def _clientFirst(self, message):
        """client-first-message -> server-first-message (r=nonce,s=salt,i=iterations)."""
        flag, authorizationId, bare = (message.split(",", 2) + ["", ""])[:3]
        if flag not in ("n", "y"):
            raise _RefusedMessage("channel binding is not supported" if flag.startswith("p=") else f"bad gs2 flag {flag[:10]!r}")
        attributes = _attributes(bare, "client-first-message")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise _RefusedMessage("client-first-message must start with n=user,r=nonce")
        user, nonce = _saslName(attributes[0][1]), attributes[1][1]
        if not user or not nonce or any(not 0x21 <= ord(c) <= 0x7E for c in nonce):
            raise _RefusedMessage("empty user name, or a nonce that is empty or not printable ASCII")
        if authorizationId and authorizationId != "a=" + attributes[0][1]:
            raise _RefusedMessage("an authorization id that is not the user name")
        self.user = user
        self._credential, self.known = self.authenticator.credentialFor(user, self.mechanism)
        self._gs2Header = f"{flag},{authorizationId},"
        self._clientFirstBare = bare
        self._nonce = nonce + secrets.token_hex(16)
        salt = base64.b64encode(self._credential.salt).decode("ascii")
        self._serverFirst = f"r={self._nonce},s={salt},i={self._credential.iterations}"
        return self._serverFirst

    def _clientFinal(self, message):
        """client-final-message (c=binding,r=nonce,p=proof) -> server-final-message (v=signature)."""
        withoutProof, separator, proof = message.rpartition(",p=")
        attributes = _attributes(withoutProof, "client-final-message") if separator else []
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise _RefusedMessage("client-final-message must be c=...,r=...,p=...")
        if attributes[0][1] != base64.b64encode(self._gs2Header.encode("utf-8")).decode("ascii"):
            raise _RefusedMessage("channel binding does not repeat the gs2 header")
        if not attributes[1][1].endswith(self._nonce):
            raise _RefusedMessage("the nonce is not the server's")
        try:
            proof = base64.b64decode(proof, validate=True)
        except ValueError:
            raise _RefusedMessage("the proof is not base64") from None
        storedKey, name = self._credential.storedKey, self.hashName
        if len(proof) != len(storedKey):
            raise _RefusedMessage("the proof has the wrong length")
        authMessage = f"{self._clientFirstBare},{self._serverFirst},{withoutProof}".encode("utf-8")
        clientSignature = hmac.digest(storedKey, authMessage, name)
        clientKey = bytes(a ^ b for a, b in zip(proof, clientSignature))
        if not hmac.compare_digest(hashlib.new(name, clientKey).digest(), storedKey):
            raise _RefusedMessage("wrong proof (password)")
        serverSignature = hmac.digest(self._credential.serverKey, authMessage, name)
        return "v=" + base64.b64encode(serverSignature).decode("ascii")


# Session states
_START, _TOKENS, _AUTHENTICATED, _FAILED = "start", "tokens", "authenticated", "failed"


class SaslSession:
    """One connection's authentication: which mechanism, how far, who.

    L{handshake} and L{authenticate} answer SaslHandshake and SaslAuthenticate
    (their encoded responses); L{rawToken} answers a handshake-v0 token. A
    failure answers once (error 58; nothing for a bare token) and closes the
    connection, as Kafka does.
    """

    def __init__(self, authenticator, gateway):
        self.authenticator = authenticator
        self.gateway = gateway
        self.state = _START
        self.mechanism = None
        self.handshakeVersion = None
        self._exchange = None
        self._admitted = False  # True: the throttle let this exchange through and finished() is owed; None: decided
        self._pending = None  # the timer of an attempt the throttle holds back
        self._closeTimer = None  # the delayed close after a failure

    @property
    def authenticated(self):
        return self.state == _AUTHENTICATED

    @property
    def expectsRawToken(self):
        """True while the next frame is a bare SASL token (after a v0 handshake)."""
        return self.state == _TOKENS and self.handshakeVersion == 0

    @property
    def host(self):
        return getattr(self.gateway.connection, "peerHost", self.gateway.connection.peer)

    def handshake(self, header, request):
        def answer(error):
            return schema.encodeResponse(
                SASL_HANDSHAKE.key, header.apiVersion, header.correlationId,
                {"errorCode": error, "mechanisms": list(self.authenticator.mechanisms)},
            )

        if self.state != _START:
            self.gateway.log.warn("SaslHandshake from {peer} in state {state}: closing", peer=self.gateway.connection.peer, state=self.state)
            self._fail()
            return answer(ErrorCode.ILLEGAL_SASL_STATE)
        if request.mechanism not in self.authenticator.mechanisms:
            self.gateway.log.warn(
                "SaslHandshake from {peer} asks for mechanism {mechanism!r}, not served: closing",
                peer=self.gateway.connection.peer, mechanism=request.mechanism,
            )
            self._fail()
            return answer(ErrorCode.UNSUPPORTED_SASL_MECHANISM)
        self.mechanism = request.mechanism
        self.handshakeVersion = header.apiVersion
        self.state = _TOKENS
        if self.mechanism == PLAIN:
            self._exchange = _PlainExchange(self.authenticator)
        else:
            self._exchange = _ScramExchange(self.authenticator, self.mechanism)
        return answer(ErrorCode.NONE)

    def authenticate(self, header, request):
        def answer(error, message=None, token=b""):
            return schema.encodeResponse(
                SASL_AUTHENTICATE.key, header.apiVersion, header.correlationId,
                {"errorCode": error, "errorMessage": message, "authBytes": token, "sessionLifetimeMs": 0},
            )

        if self.state != _TOKENS or self.handshakeVersion == 0:
            self.gateway.log.warn("SaslAuthenticate from {peer} in state {state}: closing", peer=self.gateway.connection.peer, state=self.state)
            self._fail()
            return answer(ErrorCode.ILLEGAL_SASL_STATE, f"SaslAuthenticate request received in state {self.state}; SaslHandshake v1 first")

        def failed(reason):
            reason.trap(AuthenticationFailed)
            return answer(ErrorCode.SASL_AUTHENTICATION_FAILED, str(reason.value))

        return self._step(request.authBytes).addCallbacks(lambda challenge: answer(ErrorCode.NONE, None, challenge), failed)

    def rawToken(self, token):
        """Answer a bare token (handshake v0): Deferred firing with the
        response chunks, or None when authentication failed (close, no answer)."""
        return self._step(token).addCallbacks(lambda challenge: [challenge], lambda reason: reason.trap(AuthenticationFailed) and None)

    def _step(self, token):
        """Deferred firing with the challenge to send, or failing with L{AuthenticationFailed}."""
        if self._admitted is False:
            wait = self.authenticator.throttle.admit(self.host)
            if wait is None:
                self.gateway.log.warn(
                    "refusing SASL authentication from {peer}: too many failed attempts from {host}",
                    peer=self.gateway.connection.peer, host=self.host,
                )
                self._fail()
                return defer.fail(AuthenticationFailed("Too many failed authentication attempts from this host; try again later"))
            self._admitted = True
            if wait > 0:
                d = defer.Deferred()
                self._pending = self.authenticator.clock.callLater(wait, d.callback, token)
                return d.addCallback(self._check)
        return self._check(token)

    def _check(self, token):
        if self.gateway.closed:
            self._decided(None)
            return defer.fail(AuthenticationFailed("connection closed"))
        return self._exchange.step(token).addCallbacks(self._stepped, self._failed)

    def _stepped(self, result):
        challenge, user = result
        if user is not None:
            self.state = _AUTHENTICATED
            self.gateway.authenticated(f"User:{user}")
            self.gateway.log.info(
                "{peer} authenticated as User:{user} with {mechanism}", peer=self.gateway.connection.peer, user=user, mechanism=self.mechanism
            )
            self._decided(True)
        return challenge

    def _failed(self, reason):
        reason.trap(AuthenticationFailed)
        self.gateway.log.warn(
            "SASL {mechanism} authentication failed for {peer} (user {user!r}): {why}{detail}",
            mechanism=self.mechanism, peer=self.gateway.connection.peer,
            user=getattr(self._exchange, "user", None), why=str(reason.value),
            detail=f" ({self._exchange.refusal})" if getattr(self._exchange, "refusal", None) else "",
        )
        self._decided(False)
        self._fail()
        return reason

    def _decided(self, succeeded):
        if self._admitted:
            self._admitted = None  # decided: no further finished()
            self.authenticator.throttle.finished(self.host, succeeded)
            if succeeded is not None:
                self.authenticator.counted(self.mechanism, succeeded)

    def _fail(self):
        """Close once the answer is sent, C{CLOSE_DELAY_AFTER_FAILURE} later (as
        Kafka's connection.failed.authentication.delay.ms): a client that reads
        the answer and the close together may drop the answer (kafka-python
        3.0.12 does), and would see a bare disconnect instead of error 58."""
        self.state = _FAILED
        connection, clock = self.gateway.connection, self.authenticator.clock

        def closeSoon():
            self._closeTimer = clock.callLater(CLOSE_DELAY_AFTER_FAILURE, connection.close)

        self.gateway.closeWhenAnswered(closeSoon)

    def connectionLost(self):
        """The connection went while an attempt may be waiting or under way."""
        for timer in (self._pending, self._closeTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._decided(None)


def saslHandshake(header, request, gateway):
    if gateway.authentication is None or gateway.authentication.authenticated:
        return _illegalState(header, gateway, SASL_HANDSHAKE)
    return gateway.authentication.handshake(header, request)


def saslAuthenticate(header, request, gateway):
    if gateway.authentication is None or gateway.authentication.authenticated:
        return _illegalState(header, gateway, SASL_AUTHENTICATE)
    return gateway.authentication.authenticate(header, request)


def _illegalState(header, gateway, api):
    """On an endpoint without SASL, or once authenticated, Kafka answers
    ILLEGAL_SASL_STATE and keeps the connection."""
    why = "SASL is not enabled on this endpoint" if gateway.authentication is None else "already authenticated"
    gateway.log.info("{api} from {peer}: {why} (error 34)", api=api.name, peer=gateway.connection.peer, why=why)
    return schema.encodeResponse(
        api.key, header.apiVersion, header.correlationId,
        {"errorCode": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": [], "errorMessage": why, "authBytes": b""},
    )
