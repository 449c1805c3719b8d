"""A plain Twisted TCP relay: what one more Python process on the path costs
with no WebSocket and no parsing at all (bench/run.py's shim part runs it as
the floor for `twistd kafkaw-shim`).

    python bench/tcprelay.py LISTEN_PORT TARGET_PORT

Listens on 127.0.0.1:LISTEN_PORT and pipes each connection to
127.0.0.1:TARGET_PORT (twisted.protocols.portforward, Nagle off both ways as
in the shim). It rewrites nothing: the broker behind it is started with
--advertised-port LISTEN_PORT so that clients come back through it.
"""
import sys

from twisted.internet import reactor
from twisted.protocols import portforward


class RelayClient(portforward.ProxyClient):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


class RelayClientFactory(portforward.ProxyClientFactory):
    protocol = RelayClient


class RelayServer(portforward.ProxyServer):
    clientProtocolFactory = RelayClientFactory

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


def main():
    listenPort, targetPort = int(sys.argv[1]), int(sys.argv[2])
    factory = portforward.ProxyFactory("127.0.0.1", targetPort)
    factory.protocol = RelayServer
    reactor.listenTCP(listenPort, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
