"""pgbackups: backup and restore for clustered PostgreSQL (pgBackRest into S3, under Patroni)."""

__version__ = "0.1.0"
