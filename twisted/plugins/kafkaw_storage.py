"""kafkaw's own storage backends, registered as IStorageFactory plugins."""

from kafkaw.storage.leveldb import LevelDBStorageFactory
from kafkaw.storage.memory import MemoryStorageFactory
from kafkaw.storage.postgresql import PostgreSQLStorageFactory

leveldb = LevelDBStorageFactory()
memory = MemoryStorageFactory()
postgresql = PostgreSQLStorageFactory()
