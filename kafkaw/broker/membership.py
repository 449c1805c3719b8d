"""Who leads which partition and coordinates which group.

The gateway asks an L{IMembership} instead of assuming it leads everything.
A single broker (L{LocalMembership}) is the whole cluster: it leads every
partition at leader epoch 0 and coordinates every group. Brokers sharing a
PostgreSQL database hold leases instead (L{kafkaw.broker.leases}).
"""

import zlib

from zope.interface import Attribute, Interface, implementer

NO_LEADER = (-1, -1)


class IMembership(Interface):
    brokerId = Attribute("This broker's node id.")

    def brokers():
        """The live brokers: C{[(nodeId, host, port)]}, this one included;
        C{host}/C{port} C{None} for this broker: the address the client reached
        (or the advertised one)."""

    def leader(topic, partition):
        """C{(nodeId, leaderEpoch)} of the partition's leader, or L{NO_LEADER} while it has none."""

    def leads(topic, partition):
        """True if this broker leads the partition now (and may append to and read it)."""

    def coordinator(groupId):
        """The node id of the broker coordinating group C{groupId}, or -1 while none is live."""


@implementer(IMembership)
class LocalMembership:
    """One broker: me, epoch 0, for everything."""

    def __init__(self, brokerId):
        self.brokerId = brokerId

    def brokers(self):
        return [(self.brokerId, None, None)]

    def leader(self, topic, partition):
        return (self.brokerId, 0)

    def leads(self, topic, partition):
        return True

    def coordinator(self, groupId):
        return self.brokerId


def groupCoordinator(groupId, brokerIds):
    """The broker of C{brokerIds} (sorted, live) that coordinates C{groupId}: a stable hash of the id."""
    if not brokerIds:
        return -1
    return brokerIds[zlib.crc32(groupId.encode("utf-8", "surrogatepass")) % len(brokerIds)]
