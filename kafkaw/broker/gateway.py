"""The gateway: one per client connection, whatever the transport.

A transport hands it complete request frames and gives it an
L{IKafkaConnection} to answer through. The gateway decodes each request, sends
sub-requests to the partition services and the cluster service concurrently,
and answers strictly in request order (an acks=0 Produce has no answer).
"""

import collections
import functools

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from kafkaw.broker import acls, admin, data, groups, sasl, scramusers
from kafkaw.broker.authorizer import ANONYMOUS, SUPPORTED_OPERATIONS, Operation, ResourceType
from kafkaw.broker.membership import LocalMembership
from kafkaw.metrics import NO_METRICS
from kafkaw.protocol import api, apiversions, schema
from kafkaw.protocol.api import ApiKey
from kafkaw.protocol.errors import CodecError

log = Logger()

# The pause reason a transport gives when its client does not read responses.
SLOW_READER = "slow reader"
_DENIALS_LOGGED = 100  # denials logged per connection, at most (each resource once)
_NOTHING = frozenset()


class IKafkaConnection(Interface):
    """What a transport offers the gateway for one client connection."""

    peer = Attribute("The client's address, for logs.")
    peerHost = Attribute("The client's host (no port), by which failed SASL authentications are slowed down.")

    def localAddress():
        """(host, port) the client reached, to advertise in Metadata."""

    def sendResponse(chunks):
        """Send one response: C{chunks} joined, framed as the transport frames."""

    def pauseReading():
        """Stop delivering requests until L{resumeReading}."""

    def resumeReading():
        """Deliver requests again."""

    def close():
        """Close the connection (after pending output is written)."""

    def abort():
        """Close the connection at once, dropping pending output."""


class Broker:
    """What all connections share: the services, the limits and the handlers."""

    def __init__(
        self,
        cluster,
        clock,
        coordinator=None,
        advertisedHost=None,
        advertisedPort=None,
        maxFetchWaitMs=30000,
        maxInFlightRequests=100,
        strict08=False,
        maxConnections=1000,
        idleTimeoutMs=600000,
        slowReaderTimeoutMs=60000,
        metrics=NO_METRICS,
        maxExpandedBytes=100 * 1024 * 1024,
        offReactor=defer.maybeDeferred,
        authorizer=None,
        authenticator=None,
        credentials=None,
        membership=None,
    ):
        self.cluster = cluster
        # The IAuthorizer deciding every request (--acls); None: everything is allowed.
        self.authorizer = authorizer
        # Who leads which partition and coordinates which group (IMembership):
        # a single broker leads everything.
        self.membership = membership if membership is not None else LocalMembership(getattr(cluster, "brokerId", 0))
        self.coordinator = coordinator  # the IGroupCoordinator of every group; None: groups not served
        self.metrics = metrics  # an IBrokerMetrics
        self.clock = clock
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
        self.maxFetchWaitMs = maxFetchWaitMs
        self.maxInFlightRequests = maxInFlightRequests
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeoutMs / 1000.0
        self.slowReaderTimeout = slowReaderTimeoutMs / 1000.0
        self.connections = 0  # open gateways, over all transports
        self.maxExpandedBytes = maxExpandedBytes
        # How CPU-heavy work (down-conversion for old fetchers) runs:
        # offReactor(f, *args) -> Deferred. twistd kafkaw gives it a thread
        # pool, so the reactor serves other connections meanwhile; the
        # default runs it at once (tests).
        self.offReactor = offReactor
        # The SASL L{sasl.Authenticator} of the endpoints served with --sasl (None: no SASL).
        self.authenticator = authenticator
        # The ICredentialStore that DescribeUserScramCredentials / AlterUserScramCredentials
        # read and change (None: they answer an error).
        self.credentials = credentials
        self.handlers = servedHandlers(strict08, groupsServed=coordinator is not None)
        # Handlers for every version of a key, consulted before C{handlers}:
        # ApiVersions must answer even the versions it does not serve (error 35).
        # C{strict08} leaves it out, so key 18 closes the connection as in 0.8.0.
        self.anyVersionHandlers = {}
        if not strict08:
            self.anyVersionHandlers[apiversions.API_VERSIONS] = (apiversions.decodeRequest, apiVersions)

    def openGateway(self, connection, authenticate=False):
        """A L{Gateway} for a new connection, or None (logged) when
        C{maxConnections} are open already: the transport then closes it.
        With C{authenticate} (an endpoint served with --sasl) the connection
        must authenticate with SASL before anything but ApiVersions is served."""
        if self.connections >= self.maxConnections:
            log.warn(
                "refusing connection from {peer}: {count} connections open (--max-connections)",
                peer=connection.peer, count=self.connections,
            )
            return None
        return Gateway(self, connection, authenticate)


def apiVersions(header, request, gateway):
    """List what the broker's handlers serve; error 35 unless the request's version is served."""
    handlers = gateway.broker.handlers
    gateway.log.info(
        "ApiVersions v{apiVersion} from {peer} (client {clientId}, {software} {softwareVersion}): error {error}",
        apiVersion=header.apiVersion, peer=gateway.connection.peer, clientId=header.clientId,
        software=request.clientSoftwareName, softwareVersion=request.clientSoftwareVersion,
        error=apiversions.errorFor(header.apiVersion, handlers),
    )
    return apiversions.encodeResponse(header.correlationId, header.apiVersion, handlers)


# What each API serves: (key, first version, last version, handler). The
# versions are Kafka 2.3.0's; Kafka 0.8.0 served v0 of the first four only.
_SERVED = [
    (ApiKey.PRODUCE, 0, 7, data.produce),
    (ApiKey.FETCH, 0, 11, data.fetch),
    (ApiKey.LIST_OFFSETS, 0, 5, data.listOffsets),
    (ApiKey.METADATA, 0, 8, admin.metadata),
    (admin.CREATE_TOPICS, 0, 3, admin.createTopics),
    (admin.DELETE_TOPICS, 0, 3, admin.deleteTopics),
    (admin.INIT_PRODUCER_ID, 0, 1, admin.initProducerId),
    (admin.DESCRIBE_CONFIGS, 0, 2, admin.describeConfigs),
    (admin.CREATE_PARTITIONS, 0, 1, admin.createPartitions),
    (sasl.SASL_HANDSHAKE.key, 0, 1, sasl.saslHandshake),
    (sasl.SASL_AUTHENTICATE.key, 0, 1, sasl.saslAuthenticate),
    # Kafka 2.7's, flexible (the codec encodes them: kafkaw.protocol.schema).
    (scramusers.DESCRIBE_USER_SCRAM_CREDENTIALS.key, 0, 0, scramusers.describeUserScramCredentials),
    (scramusers.ALTER_USER_SCRAM_CREDENTIALS.key, 0, 0, scramusers.alterUserScramCredentials),
]
# The consumer-group APIs, served when the broker has a group coordinator.
_GROUP_APIS = [
    (groups.OFFSET_COMMIT, 0, 7, groups.offsetCommit),
    (groups.OFFSET_FETCH, 0, 5, groups.offsetFetch),
    (groups.FIND_COORDINATOR, 0, 2, groups.findCoordinator),
    (groups.JOIN_GROUP, 0, 5, groups.joinGroup),
    (groups.HEARTBEAT, 0, 3, groups.heartbeat),
    (groups.LEAVE_GROUP, 0, 2, groups.leaveGroup),
    (groups.SYNC_GROUP, 0, 3, groups.syncGroup),
    (groups.DESCRIBE_GROUPS, 0, 3, groups.describeGroups),
    (groups.LIST_GROUPS, 0, 2, groups.listGroups),
    (groups.DELETE_GROUPS, 0, 1, groups.deleteGroups),
]
# The ACL APIs: served with or without an authorizer (without one they answer
# SECURITY_DISABLED, as Kafka does); (..., check) refuses what Kafka cannot parse.
_ACL_APIS = [
    (acls.DESCRIBE_ACLS, 0, 1, acls.describeAcls, None),
    (acls.CREATE_ACLS, 0, 1, acls.createAcls, acls.checkCreations),
    (acls.DELETE_ACLS, 0, 1, acls.deleteAcls, None),
]
# A plain int: comparing with an enum member costs ten times more, on every request.
_PRODUCE = int(ApiKey.PRODUCE)
_KAFKA_08 = (ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.LIST_OFFSETS, ApiKey.METADATA)


def _decodeChecked(apiKey, version, check, reader):
    return check(schema.decodeRequestBody(apiKey, version, reader))


def servedHandlers(strict08, groupsServed=True):
    """The dispatch table {(api key, version): (decode, handle)}: every
    version of Kafka 2.3.0's table for the APIs served (the group APIs when
    C{groupsServed}), or with C{strict08} only what Kafka 0.8.0 served.
    ApiVersions lists exactly this table."""
    handlers = {}
    for apiKey, low, high, handle, *check in _SERVED + (_GROUP_APIS if groupsServed else []) + _ACL_APIS:
        if strict08:
            if apiKey not in _KAFKA_08:
                continue
            high = 0
        for version in range(low, high + 1):
            if check and check[0] is not None:
                decode = functools.partial(_decodeChecked, apiKey, version, check[0])
            else:
                decode = functools.partial(schema.decodeRequestBody, apiKey, version)
            handlers[(apiKey, version)] = (decode, handle)
    if not strict08:
        for version in range(apiversions.FIRST_FLEXIBLE_VERSION):
            handlers[(apiversions.API_VERSIONS, version)] = (apiversions.decodeRequest, apiVersions)
    return handlers


def _call(handle, header, request, gateway):
    """C{handle}'s answer as a Deferred (what maybeDeferred does, for the few
    handlers that answer at once; most return a Deferred already)."""
    try:
        result = handle(header, request, gateway)
    except BaseException:
        return defer.fail()
    if isinstance(result, defer.Deferred):
        return result
    return defer.succeed(result)


class Gateway:
    """Handles the requests of one client connection, in order."""

    log = Logger()

    def __init__(self, broker, connection, authenticate=False):
        self.broker = broker
        self.connection = connection
        self.principal = ANONYMOUS  # "User:NAME" once the connection authenticated (SASL)
        self.host = groups.peerHost(connection.peer) or ""  # the client's IP address, as ACLs name hosts ("": a unix socket)
        self._denialsLogged = set()  # (operation, resource type, name) denied and logged
        # The SASL state of a connection to an endpoint served with --sasl; None: no SASL here.
        self.authentication = None
        if authenticate:
            if broker.authenticator is None:
                raise ValueError("an endpoint with SASL needs a broker with an authenticator")
            self.authentication = sasl.SaslSession(broker.authenticator, self)
        self.parked = set()  # unanswered fetches, cancelled when the connection goes
        self._slots = collections.deque()  # [response chunks or None, api key, time received], in request order
        self._inFlight = 0
        # Produces not yet stored (or failed), by number; and the reads
        # waiting for some of them: [(set of numbers, Deferred)].
        self._producing = set()
        self._produced = 0  # Produces handled, to number them
        self._readsWaiting = []
        self._pauses = set()
        self._backlog = collections.deque()  # (request, time received) read but not handled while paused
        self._draining = False
        self._closed = False
        self._closeWhenAnswered = None  # how to close once the requests read so far are answered
        clock = broker.clock
        broker.connections += 1
        self._counted = True  # in broker.connections, until connectionLost
        self.openedAt = self._lastActive = clock.seconds()
        self.requests = 0  # handled, for the log line at close
        self._idleTimer = clock.callLater(broker.idleTimeout, self._checkIdle)
        self._slowReaderTimer = None

    def requestReceived(self, frame):
        """Handle one complete request (the frame without its size prefix).

        While reading is paused, requests the transport had already read wait
        in a backlog (at most one read's worth), so a pause bounds the work
        taken on, not just the bytes read.
        """
        if self._closed or self._closeWhenAnswered:
            return
        self._lastActive = receivedAt = self.broker.clock.seconds()
        if self._pauses or self._backlog:
            self._backlog.append((frame, receivedAt))
        else:
            self._handle(frame, receivedAt)

    def _drainBacklog(self):
        if self._draining:
            return  # a request answered at once resumes reading: the loop below goes on
        self._draining = True
        try:
            while self._backlog and not self._pauses and not self._closed:
                self._handle(*self._backlog.popleft())
        finally:
            self._draining = False
        self._closeIfAnswered()

    def _handle(self, frame, receivedAt):
        self.requests += 1
        if self.authentication is not None and self.authentication.expectsRawToken:
            return self._handleRawToken(frame, receivedAt)
        try:
            header, reader = api.decodeHeader(frame)
        except CodecError as e:
            self.broker.metrics.requestReceived(None, 4 + len(frame))
            return self._drop(None, "undecodable request header ({why})", why=str(e))
        self.broker.metrics.requestReceived(header.apiKey, 4 + len(frame))
        entry = self.broker.anyVersionHandlers.get(header.apiKey) or self.broker.handlers.get(
            (header.apiKey, header.apiVersion)
        )
        if entry is None:
            return self._drop(
                header.apiKey,
                "unsupported request: api key {apiKey} ({apiName}) version {apiVersion} (client {clientId})",
                apiKey=header.apiKey,
                apiName=apiversions.apiName(header.apiKey),
                apiVersion=header.apiVersion,
                clientId=header.clientId,
            )
        if self.authentication is not None and not self.authentication.authenticated and header.apiKey not in sasl.PRE_AUTHENTICATION_APIS:
            return self._drop(
                header.apiKey,
                "{apiName} request before SASL authentication (client {clientId})",
                apiName=apiversions.apiName(header.apiKey), clientId=header.clientId,
            )
        decode, handle = entry
        try:
            request = decode(reader)
        except CodecError as e:
            return self._drop(
                header.apiKey, "malformed request: api key {apiKey} ({why})", apiKey=header.apiKey, why=str(e)
            )
        apiKey = header.apiKey
        slot = [None, apiKey, receivedAt]
        owed = not (apiKey == _PRODUCE and request.acks == 0)
        if owed:
            self._slots.append(slot)
        self._inFlight += 1
        if self._inFlight >= self.broker.maxInFlightRequests:
            self.pause("in-flight")
        if apiKey == _PRODUCE:
            # Tracked by number until its appends are stored (or failed).
            self._produced += 1
            number = self._produced
            self._producing.add(number)
            _call(handle, header, request, self).addCallbacks(
                self._produceAnswered, self._produceFailed, (slot, owed, number), None, (apiKey, number)
            )
            return
        if self._producing:
            # As in 0.8.0, which serves one request of a connection at a time,
            # a read sees every Produce sent before it on the same connection.
            d = defer.Deferred()
            self._readsWaiting.append((set(self._producing), d))
            d.addCallback(lambda _: None if self._closed else handle(header, request, self))
        else:
            d = _call(handle, header, request, self)
        d.addCallbacks(self._answered, self._failed, (slot, owed), None, (header.apiKey,))

    def _produceAnswered(self, chunks, slot, owed, number):
        self._produceDone(number)
        self._answered(chunks, slot, owed)

    def _produceFailed(self, reason, apiKey, number):
        self._produceDone(number)
        self._failed(reason, apiKey)

    def _produceDone(self, number):
        """Produce C{number} is stored or failed: start the reads that waited only for it."""
        self._producing.discard(number)
        if self._readsWaiting:
            ready = []
            for waited, d in self._readsWaiting:
                waited.discard(number)
                if not waited:
                    ready.append(d)
            if ready:
                self._readsWaiting = [(waited, d) for waited, d in self._readsWaiting if waited]
                for d in ready:
                    d.callback(None)

    def _handleRawToken(self, token, receivedAt):
        """A bare SASL token (after a SaslHandshake v0), answered in order
        like a request; when authentication fails, the connection closes unanswered."""
        self.broker.metrics.requestReceived(sasl.SASL_AUTHENTICATE.key, 4 + len(token))
        slot = [None, sasl.SASL_AUTHENTICATE.key, receivedAt]
        self._slots.append(slot)
        self._inFlight += 1

        def stepped(chunks):
            if chunks is not None:
                return self._answered(chunks, slot, True)
            self._inFlight -= 1
            self.broker.metrics.requestRefused(sasl.SASL_AUTHENTICATE.key)
            self._close()

        self.authentication.rawToken(token).addCallbacks(stepped, self._failed, errbackArgs=(sasl.SASL_AUTHENTICATE.key,))

    def authenticated(self, principal):
        """SASL authenticated the client as C{principal} ("User:NAME")."""
        self.principal = principal

    def requestBytesLimit(self, limit):
        """The largest request frame to read now: C{limit}, or less until SASL authentication."""
        if self.authentication is not None and not self.authentication.authenticated:
            return min(limit, sasl.MAX_UNAUTHENTICATED_REQUEST_BYTES)
        return limit

    @property
    def closed(self):
        return self._closed


    def _answered(self, chunks, slot, owed):
        self._inFlight -= 1
        if self._pauses and self._inFlight < self.broker.maxInFlightRequests:
            self.resume("in-flight")
        if self._closed:
            return
        if not owed:  # an acks=0 Produce is done once stored
            self.broker.metrics.requestAnswered(slot[1], self.broker.clock.seconds() - slot[2], None)
            self._closeIfAnswered()
            return
        slot[0] = chunks
        while self._slots and self._slots[0][0] is not None:
            chunks, apiKey, receivedAt = self._slots.popleft()
            self.connection.sendResponse(chunks)
            self._lastActive = now = self.broker.clock.seconds()
            self.broker.metrics.requestAnswered(apiKey, now - receivedAt, chunks)
        self._closeIfAnswered()

    def _failed(self, reason, apiKey):
        self._inFlight -= 1
        self.broker.metrics.requestRefused(apiKey)
        self.log.failure("request from {peer} failed; closing the connection", reason, peer=self.connection.peer)
        self._close()

    def _drop(self, refusedKey, format, **fields):
        """Close the connection over a request of API C{refusedKey} (None: unknown),
        once the requests before it are answered; those after it are not served."""
        self.broker.metrics.requestRefused(refusedKey)
        self.log.warn(format + "; closing the connection to {peer}", peer=self.connection.peer, **fields)
        self._backlog.clear()
        self.closeWhenAnswered()

    def framingFailed(self, frames, why, close=None):
        """The transport read a size prefix it cannot frame (C{why}): serve
        the requests C{frames} read whole before it, then close (with
        C{close}) once they are answered."""
        for frame in frames:
            self.requestReceived(frame)
        if self._closed or self._closeWhenAnswered:
            return  # one of them closed the connection already
        self.broker.metrics.requestRefused(None)
        self.log.warn("request frame from {peer} rejected: {why}; closing", peer=self.connection.peer, why=why)
        self.closeWhenAnswered(close)

    def closeWhenAnswered(self, close=None):
        """Read no more requests; close (with C{close}, else the connection's
        own close) once every request read so far is answered, so a client
        whose bad request follows good ones still gets their answers."""
        if self._closed or self._closeWhenAnswered:
            return
        self._closeWhenAnswered = close or self.connection.close
        self.connection.pauseReading()
        for fetch in list(self.parked):
            fetch.answerNow()  # rather than keep the connection for up to max_wait
        self._closeIfAnswered()

    @property
    def closing(self):
        """True once the connection is to close after the answers it owes."""
        return self._closeWhenAnswered is not None

    def _closeIfAnswered(self):
        if self._closeWhenAnswered and not (self._slots or self._inFlight or self._backlog):
            self._close(self._closeWhenAnswered)

    def _close(self, close=None):
        """Close now, with C{close} (else the connection's own close)."""
        if not self._closed:
            self._closed = True
            self._cancelParked()
            (close or self.connection.close)()

    def _checkIdle(self):
        """Close a connection that sent no request and got no response for
        C{idleTimeout} (Kafka's connections.max.idle.ms); one owed an answer
        (a parked Fetch, a slow store) is not idle."""
        idle = self.broker.clock.seconds() - self._lastActive
        if idle >= self.broker.idleTimeout and not self._slots and not self._inFlight:
            self.log.info("closing idle connection from {peer} ({idle:.0f} s without a request)", peer=self.connection.peer, idle=idle)
            self._idleTimer = None
            self._close()
        else:
            self._idleTimer = self.broker.clock.callLater(max(self.broker.idleTimeout - idle, 1.0), self._checkIdle)

    def _dropSlowReader(self):
        self._slowReaderTimer = None
        self.log.warn(
            "dropping connection from {peer}: it has not read its responses for {timeout:.0f} s (--slow-reader-timeout-ms)",
            peer=self.connection.peer, timeout=self.broker.slowReaderTimeout,
        )
        # Even if it is already closing: a close waits for output it will never read.
        self._closed = True
        self._cancelParked()
        self.connection.abort()

    def pause(self, reason):
        """Stop reading requests while C{reason} holds (slow reader, too many in flight).

        A client that keeps not reading its responses for C{slowReaderTimeout}
        is dropped, so it cannot hold memory and a connection slot forever.
        """
        if not self._pauses:
            self.connection.pauseReading()
        self._pauses.add(reason)
        if reason == SLOW_READER and self._slowReaderTimer is None and not self._closed:
            self._slowReaderTimer = self.broker.clock.callLater(self.broker.slowReaderTimeout, self._dropSlowReader)

    def resume(self, reason):
        if reason == SLOW_READER and self._slowReaderTimer is not None:
            self._slowReaderTimer.cancel()
            self._slowReaderTimer = None
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses and not self._closed:
                self._drainBacklog()
                if not self._pauses and not self._closed and not self._closeWhenAnswered:
                    self.connection.resumeReading()

    # --- ACLs ---

    def allowed(self, operation, resourceType, name):
        """May this connection's principal do C{operation} on the resource?
        Always, without --acls. A denial is counted (metrics) and logged,
        once per connection and resource."""
        authorizer = self.broker.authorizer
        if authorizer is None or authorizer.authorize(self.principal, self.host, operation, resourceType, name):
            return True
        self.broker.metrics.authorizationDenied(operation)
        denied = self._denialsLogged
        if len(denied) < _DENIALS_LOGGED and (operation, resourceType, name) not in denied:
            denied.add((operation, resourceType, name))
            self.log.info(
                "denied {principal} from {peer}: {operation} on {resourceType} {name!r} (the ACLs do not allow it)",
                principal=self.principal, peer=self.connection.peer, operation=Operation(operation).name,
                resourceType=ResourceType(resourceType).name, name=name,
            )
        return False

    def denied(self, operation, resourceType, names):
        """The set of C{names} (of resources of C{resourceType}) on which
        L{allowed} says no to C{operation}; empty without --acls. Each
        denial is counted and logged once (the allowed ones, the usual case,
        cost one authorizer call each and nothing more)."""
        authorizer = self.broker.authorizer
        if authorizer is None:
            return _NOTHING
        authorize, principal, host = authorizer.authorize, self.principal, self.host
        refused = [name for name in names if not authorize(principal, host, operation, resourceType, name)]
        if not refused:
            return _NOTHING
        return {name for name in set(refused) if not self.allowed(operation, resourceType, name)}

    def sees(self, operation, resourceType, name):
        """As L{allowed}, neither counted nor logged: for lists filtered by what the principal may see."""
        authorizer = self.broker.authorizer
        return authorizer is None or authorizer.authorize(self.principal, self.host, operation, resourceType, name)

    def authorizedOperations(self, resourceType, name):
        """KIP-430's bitfield: bit N set when the principal may do operation
        N on the resource, over the operations its type offers (all of
        them without --acls). An inquiry: nothing is counted or logged."""
        return sum(1 << operation for operation in SUPPORTED_OPERATIONS[resourceType] if self.sees(operation, resourceType, name))

    # --- end of ACLs ---

    def connectionLost(self):
        """The connection is gone (may be called more than once)."""
        self._closed = True
        if self.authentication is not None:
            self.authentication.connectionLost()
        self._cancelParked()
        self._slots.clear()
        self._backlog.clear()
        for timer in (self._idleTimer, self._slowReaderTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idleTimer = self._slowReaderTimer = None
        if not self._counted:
            return
        self._counted = False
        self.broker.connections -= 1

    def _cancelParked(self):
        for fetch in list(self.parked):
            fetch.cancel()
