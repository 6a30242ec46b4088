import sys

from tophan.cli.main import main

sys.exit(main())
