from pgbackups.local.cli.main import entry

entry()
