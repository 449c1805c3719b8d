"""The broker: services for the cluster and each partition, and the gateway."""
