"""Broker metrics: what the gateway and the transports report, and
C{--metrics}, which serves it to Prometheus.

The gateway calls an L{IBrokerMetrics} once as a request ends (and once per
partition error); the transports call it as connections open and close.
L{NO_METRICS}, the default, does nothing, so without C{--metrics} a request
costs one empty call. L{PrometheusMetrics} counts into its own
C{CollectorRegistry} (several brokers can live in one process, as in the unit
tests). Nothing is counted per message: messages in and the log offsets are
read from the partitions when Prometheus scrapes, and the consumer groups
(members, rebalances, committed offsets and lag) from the group coordinator.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import Interface, implementer

from kafkaw.broker.authorizer import Operation
from kafkaw.broker.coordinator import DEAD
from kafkaw.protocol.apiversions import API_NAMES, apiName
from kafkaw.protocol.errors import ErrorCode

# Request latency buckets, in seconds: from a fast in-memory answer up to a
# Fetch parked for --max-fetch-wait-ms (30 s by default).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IBrokerMetrics(Interface):
    """What a broker reports as it works; every call must be cheap."""

    def connectionOpened(transport):
        """A client connection was accepted on C{transport} ("tcp" or "websocket")."""

    def connectionClosed(transport):
        """A connection L{connectionOpened} reported is gone."""

    def requestReceived(apiKey, size):
        """A request frame of C{size} bytes (size prefix included) is being
        handled; C{apiKey} is None when its header cannot be decoded."""

    def requestAnswered(apiKey, seconds, response):
        """A request is done: its C{response} (byte chunks, without the size
        prefix) was sent C{seconds} after the request arrived. C{response} is
        None for an acks=0 Produce, which is done when stored and owes no answer."""

    def requestRefused(apiKey):
        """A request made the broker close the connection: undecodable,
        unsupported, malformed, or its handling failed."""

    def partitionError(apiKey, errorCode):
        """A partition's result in a Produce, Fetch or ListOffsets answer carries C{errorCode}."""

    # --- ACLs ---

    def authorizationDenied(operation):
        """The ACLs denied a request C{operation} (a Kafka ACL operation code) on a resource."""

    # --- SASL ---

    def authenticationDone(mechanism, succeeded):
        """A SASL authentication with C{mechanism} (one the broker serves) succeeded or failed."""


@implementer(IBrokerMetrics)
class NoMetrics:
    """Counts nothing: a broker without C{--metrics}."""

    def connectionOpened(self, transport):
        pass

    def connectionClosed(self, transport):
        pass

    def requestReceived(self, apiKey, size):
        pass

    def requestAnswered(self, apiKey, seconds, response):
        pass

    def requestRefused(self, apiKey):
        pass

    def partitionError(self, apiKey, errorCode):
        pass

    def authorizationDenied(self, operation):
        pass

    def authenticationDone(self, mechanism, succeeded):
        pass


NO_METRICS = NoMetrics()


class _ApiMetrics:
    """The labelled children of one API, looked up once rather than per request."""

    __slots__ = ("requestBytes", "responseBytes", "answered", "refused", "latency")

    def __init__(self, metrics, name):
        self.requestBytes = metrics.requestBytes.labels(name)
        self.responseBytes = metrics.responseBytes.labels(name)
        self.answered = metrics.requests.labels(name, "ok")
        self.refused = metrics.requests.labels(name, "refused")
        self.latency = metrics.latency.labels(name)


@implementer(IBrokerMetrics)
class PrometheusMetrics:
    """Counts into C{self.registry}, a registry of this broker's own."""

    def __init__(self, cluster, coordinator=None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kafkaw_requests",
            "Requests done, by API and outcome: ok (answered; an acks=0 Produce: stored) or refused (closed the connection)",
            ["api", "outcome"],
            registry=self.registry,
        )
        self.requestBytes = Counter(
            "kafkaw_request_bytes", "Bytes of request frames received (size prefix included)", ["api"], registry=self.registry
        )
        self.responseBytes = Counter(
            "kafkaw_response_bytes", "Bytes of response frames sent (size prefix included)", ["api"], registry=self.registry
        )
        self.latency = Histogram(
            "kafkaw_request_duration_seconds",
            "Time from a request's arrival to its response being sent (a parked Fetch includes its wait)",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.partitionErrors = Counter(
            "kafkaw_partition_errors",
            "Partition results with an error code in Produce, Fetch and ListOffsets answers",
            ["api", "error"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "kafkaw_connections", "Client connections open, by transport", ["transport"], registry=self.registry
        )
        self.authorizationDenials = Counter(
            "kafkaw_authorization_denials",
            "Requests (or their topics, groups) the ACLs denied and the answer said so, by operation",
            ["operation"],
            registry=self.registry,
        )
        self.authentications = Counter(
            "kafkaw_sasl_authentications",
            "SASL authentications decided, by mechanism and outcome (success or failure)",
            ["mechanism", "outcome"],
            registry=self.registry,
        )
        self.partitions = PartitionCollector(cluster)
        self.registry.register(self.partitions)
        self.groups = GroupCollector(coordinator, cluster)
        self.registry.register(self.groups)
        self._apis = {}  # api key -> _ApiMetrics
        self._errors = {}  # (api key, error code) -> counter child

    def refresh(self):
        """Copy what scrapes report from the partitions and groups (on the reactor thread)."""
        self.partitions.refresh()
        self.groups.refresh()

    def _api(self, apiKey):
        found = self._apis.get(apiKey)
        if found is None:
            # Keys without a name share "unknown", so a client cannot make series without end.
            key = apiKey if apiKey in API_NAMES else None
            found = self._apis.get(key)
            if found is None:
                found = self._apis[key] = _ApiMetrics(self, apiName(apiKey))
        return found

    def connectionOpened(self, transport):
        self.connections.labels(transport).inc()

    def connectionClosed(self, transport):
        self.connections.labels(transport).dec()

    def requestReceived(self, apiKey, size):
        self._api(apiKey).requestBytes.inc(size)

    def requestAnswered(self, apiKey, seconds, response):
        metrics = self._api(apiKey)
        metrics.answered.inc()
        metrics.latency.observe(seconds)
        if response is not None:
            metrics.responseBytes.inc(4 + sum(map(len, response)))

    def requestRefused(self, apiKey):
        self._api(apiKey).refused.inc()

    def partitionError(self, apiKey, errorCode):
        counter = self._errors.get((apiKey, errorCode))
        if counter is None:
            try:
                error = ErrorCode(errorCode).name
            except ValueError:
                error = str(errorCode)
            counter = self._errors[apiKey, errorCode] = self.partitionErrors.labels(apiName(apiKey), error)
        counter.inc()

    def authorizationDenied(self, operation):
        try:
            name = Operation(operation).name
        except ValueError:
            name = str(operation)
        self.authorizationDenials.labels(name).inc()

    def authenticationDone(self, mechanism, succeeded):
        self.authentications.labels(mechanism, "success" if succeeded else "failure").inc()


class PartitionCollector:
    """Each partition's log start and end offsets, and messages in by topic.

    Nothing is done per append: messages in is how far each log end has moved
    since the broker started (a topic created since started at 0). The cluster
    belongs to the reactor thread while scrapes are formatted in the reactor's
    thread pool, so L{refresh} (on the reactor thread, as a scrape arrives)
    copies the numbers and L{collect} reports the copy.
    """

    def __init__(self, cluster):
        self._cluster = cluster
        self._offsets = self._read()
        self._baseline = {(topic, partition): end for topic, partition, _, end in self._offsets}

    def _read(self):
        offsets = []
        for topic, count in sorted(self._cluster.topics().items()):
            for number in range(count):
                service = self._cluster.partition(topic, number)
                offsets.append((topic, number, service.logStartOffset, service.logEndOffset))
        return offsets

    def refresh(self):
        """Copy the offsets of every partition (on the reactor thread)."""
        self._offsets = self._read()

    def collect(self):
        offsets, baseline = self._offsets, self._baseline
        start = GaugeMetricFamily(
            "kafkaw_partition_log_start_offset", "Offset of the first message a partition keeps", labels=["topic", "partition"]
        )
        end = GaugeMetricFamily(
            "kafkaw_partition_log_end_offset", "Offset the next message appended to a partition gets", labels=["topic", "partition"]
        )
        messagesIn = CounterMetricFamily(
            "kafkaw_messages_in", "Messages appended by Produce requests since the broker started, by topic", labels=["topic"]
        )
        byTopic = {}
        for topic, partition, startOffset, endOffset in offsets:
            start.add_metric([topic, str(partition)], startOffset)
            end.add_metric([topic, str(partition)], endOffset)
            byTopic[topic] = byTopic.get(topic, 0) + endOffset - baseline.get((topic, partition), 0)
        for topic, count in byTopic.items():
            messagesIn.add_metric([topic], count)
        return [start, end, messagesIn]


class GroupCollector:
    """Each consumer group's members and rebalances, and its committed offset
    and lag for each partition, as the group coordinator and the partitions
    have them when a scrape arrives (L{refresh}, on the reactor thread; nothing
    is done per request). Lag is the partition's log end offset minus the
    committed offset, for partitions that exist; a group being deleted is
    left out. Without a coordinator (groups not served) it reports nothing.
    """

    def __init__(self, coordinator, cluster):
        self._coordinator = coordinator
        self._cluster = cluster
        self._groups = []  # (group, members, rebalances)
        self._offsets = []  # (group, topic, partition, committed offset, log end offset or None)

    def _read(self):
        groups, offsets = [], []
        for stats in self._coordinator.stats():
            if stats.state == DEAD:
                continue
            groups.append((stats.groupId, stats.members, stats.rebalances))
            if not stats.offsets:
                continue
            fetched = []
            # A coordinator answers from memory: the Deferred has fired.
            self._coordinator.fetchOffsets(stats.groupId, None).addCallback(fetched.append)
            if not fetched or fetched[0][0]:
                continue
            for (topic, partition), found in sorted(fetched[0][1].items()):
                if found.errorCode or found.offset < 0:
                    continue
                service = self._cluster.partition(topic, partition)
                end = None if service is None else service.logEndOffset
                offsets.append((stats.groupId, topic, partition, found.offset, end))
        return groups, offsets

    def refresh(self):
        """Copy the groups' numbers (on the reactor thread)."""
        if self._coordinator is not None:
            self._groups, self._offsets = self._read()

    def collect(self):
        groups, offsets = self._groups, self._offsets
        members = GaugeMetricFamily("kafkaw_group_members", "Members of a consumer group", labels=["group"])
        rebalances = CounterMetricFamily(
            "kafkaw_group_rebalances",
            "Rebalances a consumer group completed (it became Stable) since the broker started",
            labels=["group"],
        )
        committed = GaugeMetricFamily(
            "kafkaw_group_committed_offset",
            "Offset a consumer group committed for a partition (the next message it will read)",
            labels=["group", "topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "kafkaw_group_lag",
            "Messages of a partition after a consumer group's committed offset: log end offset - committed offset",
            labels=["group", "topic", "partition"],
        )
        for group, count, rebalanced in groups:
            members.add_metric([group], count)
            rebalances.add_metric([group], rebalanced)
        for group, topic, partition, offset, end in offsets:
            labels = [group, topic, str(partition)]
            committed.add_metric(labels, offset)
            if end is not None:
                lag.add_metric(labels, end - offset)
        return [members, rebalances, committed, lag]


class _Scrape(Resource):
    """C{GET /metrics}: the partition and group numbers are copied here, on the reactor
    thread; prometheus_client's L{MetricsResource} then formats everything in
    the reactor's thread pool, so a big scrape does not stall the broker."""

    isLeaf = True

    def __init__(self, metrics):
        super().__init__()
        from prometheus_client.twisted import MetricsResource  # imports the reactor: only when serving

        self._metrics = metrics
        self._format = MetricsResource(metrics.registry)

    def render(self, request):
        self._metrics.refresh()
        return self._format.render(request)


class _QuietSite(Site):
    """No access log line per scrape: one every few seconds is not news."""

    noisy = False

    def log(self, request):
        pass


def metricsSite(metrics):
    """The HTTP site of C{--metrics}: Prometheus text format on C{/metrics}."""
    root = Resource()
    root.putChild(b"metrics", _Scrape(metrics))
    return _QuietSite(root)
