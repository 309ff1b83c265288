"""The unit's workload, written once for every host: PostgreSQL under Patroni and the
pgBackRest TLS server, configured through the adapters.

A host supplies what differs: where things are (:mod:`.layout`), how services are
started (:mod:`.services`) and the DCS (:mod:`.dcs`). This layer may import the core and
the adapters, never a host.
"""
