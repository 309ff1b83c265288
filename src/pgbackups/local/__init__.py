"""The local runtime: a PostgreSQL HA cluster (Patroni, etcd) with S3 over TLS on one
machine. See docs/local-runtime.md; the Python API is :mod:`pgbackups.local.runtime.cluster`."""
