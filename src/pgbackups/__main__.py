import sys

from pgbackups.local.cli.main import main

sys.exit(main())
