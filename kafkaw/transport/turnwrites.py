"""TCP connections that send what they were given at the end of the reactor's turn.

Twisted's TCP transport keeps every write until the socket's next writable
event (twisted/twisted#5303): per answer, an C{epoll_ctl} to watch the
socket, a poll event dispatched through the reactor's per-event log context,
the send, and an C{epoll_ctl} to stop watching. Measured on a broker
answering many small Produce requests, that is ~9 µs of ~90 µs per request.

The connections here instead send, once per reactor turn, what was written
to them in that turn: one timed call (C{callLater(0)}, run before the reactor
next polls) for all the connections that wrote, then one send each, so
several answers written in the same turn still leave as one send. Whatever
the kernel does not take, a write made while closing, or an error, goes to
the reactor's writable event exactly as before, so order, backpressure (a
streaming producer paused while the buffer is full, resumed once it is sent)
and connection loss stay Twisted's own.

L{TurnWritesReactor} wraps a reactor for C{strports} / C{serverFromString}:
its C{listenTCP} (behind C{tcp:} and C{tcp6:} endpoints) and C{listenSSL}
(C{ssl:}, TLS over such a port, as Twisted builds it) make ports whose
connections are L{TurnWritesServer}; everything else (UNIX sockets,
systemd's sockets) is the reactor's own.
"""

from twisted.internet import tcp
from twisted.internet.posixbase import PosixReactorBase
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.logger import Logger
from zope.interface import directlyProvides, providedBy

_log = Logger()


class _TurnEnd:
    """A port's connections that wrote during this turn, sent together at its end."""

    def __init__(self, reactor):
        self._reactor = reactor
        self._waiting = []
        self._call = None

    def add(self, connection):
        self._waiting.append(connection)
        if self._call is None:
            self._call = self._reactor.callLater(0, self._sendAll)

    def _sendAll(self):
        self._call = None
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            connection.sendWritten()


class TurnWritesServer(tcp.Server):
    """A server-side TCP connection that sends at the end of the turn in which
    it was written to, rather than on the socket's next writable event."""

    _waitingForTurnEnd = False
    _watched = False  # the reactor waits for the socket to be writable: it sends the rest
    _drained = False
    _closing = False  # loseConnection/loseWriteConnection: Twisted's own path from then on

    def startWriting(self):
        # FileDescriptor.write and writeSequence call this after every write.
        if self._closing or self._watched:
            self._watch()
        elif not self._waitingForTurnEnd:
            self._waitingForTurnEnd = True
            self.server.turnEnd.add(self)

    def stopWriting(self):
        self._watched = False
        self._drained = True  # doWrite sent everything, or the connection is lost
        super().stopWriting()

    def loseConnection(self, *args, **kwargs):
        self._closing = True
        super().loseConnection(*args, **kwargs)

    def loseWriteConnection(self):
        self._closing = True
        super().loseWriteConnection()

    def _watch(self):
        self._watched = True
        super().startWriting()

    def sendWritten(self):
        """Send what this turn wrote; leave to the reactor's writable event
        what the kernel did not take, and any error."""
        self._waitingForTurnEnd = False
        if not self.connected or self._watched:
            return
        if self._closing:
            self._watch()
            return
        self._drained = False
        try:
            why = self.doWrite()
        except BaseException:
            _log.failure("sending {connection}'s writes at the end of the turn", connection=self)
            why = True
        if why is not None or not self._drained:
            self._watch()


class TurnWritesPort(tcp.Port):
    """A TCP port whose connections are L{TurnWritesServer}."""

    transport = TurnWritesServer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.turnEnd = _TurnEnd(self.reactor)


class TurnWritesReactor:
    """A reactor, but for C{listenTCP} and C{listenSSL}, whose ports are L{TurnWritesPort}.

    Only Twisted's own POSIX reactors (epoll, poll, select) get such ports;
    with any other (a test's C{MemoryReactor}, IOCP) this listens as the
    reactor does.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._own = isinstance(reactor, PosixReactorBase)
        directlyProvides(self, providedBy(reactor))  # endpoints may adapt it to the reactor's interfaces

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if not self._own:
            return self._reactor.listenTCP(port, factory, backlog, interface)
        listening = TurnWritesPort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        if not self._own:
            return self._reactor.listenSSL(port, factory, contextFactory, backlog, interface)
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)
