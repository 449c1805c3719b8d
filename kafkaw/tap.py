"""C{twistd kafkaw}: options and the service they build."""

import gc
import os
import re
import socket

from twisted.application import service, strports
from twisted.internet import threads
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python import usage

from kafkaw.broker.authorizer import AclAuthorizer
from kafkaw.broker.coordinator import GroupCoordinator, OffsetExpiryService
from kafkaw.broker.gateway import Broker
from kafkaw.broker.sasl import Authenticator, FailureThrottle
from kafkaw.broker.services import ClusterService, RetentionService
from kafkaw.config import ConfigFileOptions, atLeast, positive
from kafkaw.metrics import NO_METRICS, PrometheusMetrics, metricsSite
from kafkaw.storage.interfaces import IAclStore, ICredentialStore, IStorageFactory, StorageError
from kafkaw.transport.tcp import KafkaFactory
from kafkaw.transport.turnwrites import TurnWritesReactor
from kafkaw.transport.websocket import KafkaWebSocketFactory

DEFAULT_LISTEN = "tcp:9092:interface=127.0.0.1"
DEFAULT_WEBSOCKET = "tcp:9093:interface=127.0.0.1"
_LISTEN_ADDRESS = re.compile(r"^tcp:(?:port=)?(?P<port>\d+)(?::.*?interface=(?P<interface>[^:]+))?")


def storageBackends():
    """Storage factories registered as plugins, by name."""
    import twisted.plugins

    return {factory.name: factory for factory in getPlugins(IStorageFactory, twisted.plugins)}


def _limit(name, minimum):
    def convert(value):
        number = int(value)
        if number != -1 and number < minimum:
            raise ValueError(f"{name} must be -1 (unlimited) or at least {minimum}")
        return number

    convert.coerceDoc = f"-1 (unlimited) or an integer of at least {minimum}."
    return convert


class Options(ConfigFileOptions):
    commandName = "kafkaw"
    synopsis = "[options]"
    longdesc = (
        "A Kafka broker speaking Kafka 2.3.0's protocol (Produce, Fetch, ListOffsets, Metadata, topic admin, "
        "idempotent producers) and Kafka 0.8's, over TCP and WebSocket, stored in LevelDB. Endpoints are Twisted strports strings."
    )
    optFlags = [
        ["sync", None, "fsync every append before acknowledging it (survives power loss, slower)"],
        ["no-auto-create-topics", None, "answer UnknownTopicOrPartition for unknown topics instead of creating them"],
        ["no-websocket", None, "serve no WebSocket endpoint (overrides --websocket)"],
        ["sasl", None, "require SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; users: `kafkaw users add`) on every --listen and --websocket endpoint but those named by --sasl-exempt"],
        ["strict-0.8", None, "behave exactly as Kafka 0.8.0: serve v0 of Produce, Fetch, ListOffsets and Metadata only, and close the connection on anything else (ApiVersions included)"],
        # ACLs
        ["acls", None, "enforce ACLs (Kafka's SimpleAclAuthorizer rules; on with --sasl); a connection that did not authenticate is User:ANONYMOUS"],
        ["allow-everyone-if-no-acl", None, "with --acls, allow a resource without any ACL to everyone (Kafka's allow.everyone.if.no.acl.found) instead of to super users only"],
    ]
    optParameters = [
        ["data-dir", "d", "kafkaw-data", "directory for stored data"],
        ["storage", None, "leveldb", "storage backend (a plugin) as TYPE or TYPE:ARGS: leveldb, memory, or postgresql:DSN (a cluster of brokers sharing one PostgreSQL; DSN empty: $KAFKAW_POSTGRESQL_DSN)"],
        ["num-partitions", None, 1, "partitions of an auto-created topic", positive("num-partitions")],
        ["message-max-bytes", None, 1000000, "largest message accepted (Produce error 10 above it)", positive("message-max-bytes")],
        ["max-request-bytes", None, 104857600, "largest request frame; a bigger one closes the connection", positive("max-request-bytes")],
        ["max-fetch-wait-ms", None, 30000, "cap on how long a Fetch may be parked", positive("max-fetch-wait-ms")],
        ["advertised-host", None, None, "host put in Metadata (default: the address the client connected to)"],
        ["advertised-port", None, None, "port put in Metadata (default: the port the client connected to)", int],
        ["broker-id", None, 0, "this broker's node id in Metadata (unique within a cluster sharing one PostgreSQL)", int],
        ["lease-ms", None, 10000, "with --storage postgresql: a broker's lease on its partitions; a broker not heard from for this long loses them to the live ones", atLeast("lease-ms", 500)],
        ["retention-hours", None, 168, "delete stored batches older than this (topics may set retention.ms)", _limit("retention-hours", 1)],
        ["retention-bytes", None, -1, "per partition, delete the oldest batches while what stays is at least this (topics may set retention.bytes)", _limit("retention-bytes", 0)],
        ["retention-check-interval-ms", None, 300000, "how often retention runs", positive("retention-check-interval-ms")],
        ["max-connections", None, 1000, "client connections open at once, over all endpoints; more are closed at once", positive("max-connections")],
        ["idle-timeout-ms", None, 600000, "close a connection with no request for this long (as Kafka's connections.max.idle.ms)", positive("idle-timeout-ms")],
        ["slow-reader-timeout-ms", None, 60000, "drop a connection that has not read its responses for this long", positive("slow-reader-timeout-ms")],
        ["max-in-flight-requests", None, 16, "requests of one connection handled at once; it is not read further meanwhile", positive("max-in-flight-requests")],
        ["group-initial-rebalance-delay-ms", None, 3000, "how long a new group waits for more members before its first rebalance (Kafka's group.initial.rebalance.delay.ms)", atLeast("group-initial-rebalance-delay-ms", 0)],
        ["group-min-session-timeout-ms", None, 6000, "shortest session timeout a group member may ask for", positive("group-min-session-timeout-ms")],
        ["group-max-session-timeout-ms", None, 1800000, "longest session timeout a group member may ask for", positive("group-max-session-timeout-ms")],
        ["offsets-retention-minutes", None, 10080, "committed offsets of a group are deleted this long after it became empty (7 days, as Kafka)", positive("offsets-retention-minutes")],
        ["sasl-failure-delay-ms", None, 100, "with --sasl: after a failed authentication, how long the next attempt from the same host waits; doubles per recent failure up to 32 times this", positive("sasl-failure-delay-ms")],
        ["metrics", None, None, "serve Prometheus metrics at /metrics on this strports endpoint, e.g. tcp:9308:interface=127.0.0.1 (default: off)"],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["websocket"] = []
        self["websocket-allowed-origin"] = []
        self["super-user"] = []
        self["sasl-exempt"] = []

    def opt_listen(self, description):
        """Kafka (TCP) endpoint, as a strports string; repeatable [default: tcp:9092:interface=127.0.0.1]."""
        self["listen"].append(description)

    def opt_websocket(self, description):
        """Kafka-over-WebSocket endpoint (path /, kafka-websocket-shim framing), as a strports string; `ssl:` gives wss://; repeatable [default: tcp:9093:interface=127.0.0.1]."""
        self["websocket"].append(description)

    def opt_websocket_allowed_origin(self, pattern):
        """Browser Origin allowed on the WebSocket endpoints (e.g. https://app.example.com, https://*.example.com, *); repeatable [default: none: handshakes with an Origin header, i.e. from browsers, are refused]."""
        self["websocket-allowed-origin"].append(pattern)

    def opt_super_user(self, principal):
        """With --acls or --sasl, a principal allowed everything whatever the ACLs say, e.g. User:admin; repeatable (default: none)."""
        if not principal.startswith("User:") or len(principal) == len("User:"):
            raise usage.UsageError(f"--super-user takes a principal User:NAME, not {principal!r}")
        self["super-user"].append(principal)
    def opt_sasl_exempt(self, description):
        """With --sasl: an endpoint, exactly as given to --listen or --websocket, that serves clients without authentication (e.g. a unix: socket for local tools); repeatable."""
        self["sasl-exempt"].append(description)

    def postOptions(self):
        if not self["listen"]:
            self["listen"].append(DEFAULT_LISTEN)
        if self["no-websocket"]:
            self["websocket"] = []
        elif not self["websocket"]:
            self["websocket"].append(DEFAULT_WEBSOCKET)
        if self["sasl-exempt"] and not self["sasl"]:
            raise usage.UsageError("--sasl-exempt needs --sasl")
        unknown = set(self["sasl-exempt"]) - set(self["listen"]) - set(self["websocket"])
        if unknown:
            raise usage.UsageError(f"--sasl-exempt names no --listen or --websocket endpoint: {', '.join(sorted(unknown))}")
        if self["sasl"] and self["strict-0.8"]:
            raise usage.UsageError("--sasl and --strict-0.8 exclude each other: Kafka 0.8.0 had no SASL")
        backends = storageBackends()
        kind, _, arguments = self["storage"].partition(":")
        if kind not in backends:
            raise usage.UsageError(f"unknown storage {kind!r}; available: {', '.join(sorted(backends))}")
        self["storage-type"], self["storage-arguments"] = kind, arguments or None
        if self["sasl"]:
            self["acls"] = True  # who authenticated is only worth knowing if it decides what they may do
        if (self["super-user"] or self["allow-everyone-if-no-acl"]) and not self["acls"]:
            raise usage.UsageError("--super-user and --allow-everyone-if-no-acl need --acls (or --sasl)")


class BrokerService(service.MultiService):
    """The listeners plus the store; the store closes after the listeners stop."""

    log = Logger()

    def __init__(self, store):
        super().__init__()
        self.store = store

    def privilegedStartService(self):
        # Listening happens here (before the reactor runs); if an endpoint
        # cannot listen, close the store so its threads let the process exit.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            self.store.close()
            raise SystemExit(f"kafkaw: {e}")
        except BaseException:
            self.store.close()
            raise

    def stopService(self):
        d = super().stopService()
        d.addCallback(lambda _: self.store.close())
        d.addCallback(lambda _: self.log.info("store closed"))
        return d


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    factory = storageBackends()[options["storage-type"]]
    try:
        store = factory.openStore(os.path.abspath(options["data-dir"]), options["sync"], options["storage-arguments"])
    except StorageError as e:
        raise SystemExit(f"kafkaw: {e}")
    # The store's threads would keep a failed start-up from exiting: close it.
    try:
        return _brokerService(options, store, reactor)
    except (ValueError, OSError) as e:  # an endpoint string that does not parse, a missing certificate...
        store.close()
        raise SystemExit(f"kafkaw: {e}")
    except BaseException:
        store.close()
        raise


def _authorizer(options, store):
    """The authorizer of --acls (None without it), deciding by the store's ACLs."""
    if not options["acls"]:
        return None
    if not IAclStore.providedBy(store):
        raise ValueError(f"--acls needs a storage backend that keeps ACLs; {options['storage-type']!r} does not")
    return AclAuthorizer(store, options["super-user"], options["allow-everyone-if-no-acl"])


def _brokerService(options, store, reactor):
    cluster = ClusterService(
        store,
        reactor,
        brokerId=options["broker-id"],
        numPartitions=options["num-partitions"],
        autoCreateTopics=not options["no-auto-create-topics"],
        maxMessageBytes=options["message-max-bytes"],
        maxExpandedBytes=options["max-request-bytes"],
        retentionMs=-1 if options["retention-hours"] == -1 else options["retention-hours"] * 3600 * 1000,
        retentionBytes=options["retention-bytes"],
    )
    authenticator = None
    if options["sasl"]:
        if not ICredentialStore.providedBy(store):
            raise ValueError(f"storage {options['storage-type']!r} cannot store SASL credentials")
        delay = options["sasl-failure-delay-ms"] / 1000.0
        authenticator = Authenticator(
            store, reactor, FailureThrottle(reactor, firstDelay=delay, maxDelay=32 * delay),
            offReactor=lambda f, *args: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
        )
    coordinator = GroupCoordinator(
        reactor,
        store,
        minSessionTimeoutMs=options["group-min-session-timeout-ms"],
        maxSessionTimeoutMs=options["group-max-session-timeout-ms"],
        initialRebalanceDelayMs=options["group-initial-rebalance-delay-ms"],
        offsetsRetentionMs=options["offsets-retention-minutes"] * 60 * 1000,
    )
    membership = _clusterMembership(options, store, cluster, coordinator, reactor)
    broker = Broker(
        cluster,
        reactor,
        coordinator,
        advertisedHost=options["advertised-host"],
        advertisedPort=options["advertised-port"],
        maxFetchWaitMs=options["max-fetch-wait-ms"],
        strict08=options["strict-0.8"],
        maxConnections=options["max-connections"],
        idleTimeoutMs=options["idle-timeout-ms"],
        slowReaderTimeoutMs=options["slow-reader-timeout-ms"],
        maxInFlightRequests=options["max-in-flight-requests"],
        metrics=PrometheusMetrics(cluster, coordinator) if options["metrics"] else NO_METRICS,
        maxExpandedBytes=options["max-request-bytes"],
        offReactor=lambda f, *args: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
        authorizer=_authorizer(options, store),
        authenticator=authenticator,
        credentials=store if ICredentialStore.providedBy(store) else None,
        membership=membership,
    )
    if authenticator is not None:
        authenticator.metrics = broker.metrics
    # What start-up loaded (every topic's services) lives as long as the
    # process: out of the collector's sight, a full collection stays short
    # however many topics there are (measured: 43-56 ms at 10,000 topics).
    gc.freeze()
    top = BrokerService(store)
    RetentionService(cluster, options["retention-check-interval-ms"] / 1000.0, reactor).setServiceParent(top)
    OffsetExpiryService(coordinator, reactor).setServiceParent(top)
    for description in options["listen"]:
        authenticate = options["sasl"] and description not in options["sasl-exempt"]
        kafka = KafkaFactory(broker, options["max-request-bytes"], authenticate)
        strports.service(description, kafka, reactor=TurnWritesReactor(reactor)).setServiceParent(top)
    for description in options["websocket"]:
        authenticate = options["sasl"] and description not in options["sasl-exempt"]
        websocket = KafkaWebSocketFactory(
            broker, options["max-request-bytes"], reactor=reactor, allowedOrigins=options["websocket-allowed-origin"],
            authenticate=authenticate,
        )
        strports.service(description, websocket, reactor=TurnWritesReactor(reactor)).setServiceParent(top)
    if options["metrics"]:
        strports.service(options["metrics"], metricsSite(broker.metrics), reactor=reactor).setServiceParent(top)
    if membership is not None:
        membership.setServiceParent(top)  # started after the listeners, stopped (handing over) before the store closes
    return top


def _clusterMembership(options, store, cluster, coordinator, reactor):
    """Leases on the shared database when the store is one brokers share (PostgreSQL), else None."""
    if options["storage-type"] != "postgresql":
        return None
    from kafkaw.broker.leases import PostgreSQLMembership

    host, port = options["advertised-host"], options["advertised-port"]
    listen = _LISTEN_ADDRESS.match(options["listen"][0])
    if host is None:
        host = (listen and listen.group("interface")) or socket.getfqdn()
    if port is None:
        if not listen:
            raise ValueError("a cluster member needs --advertised-port when its first --listen is not tcp:PORT")
        port = int(listen.group("port"))
    return PostgreSQLMembership(store, cluster, options["broker-id"], host, port, options["lease-ms"], reactor, coordinator)

