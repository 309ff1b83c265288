import sys

from pgbackups.cli import main

sys.exit(main())
