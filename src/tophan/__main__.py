import sys

from tophan.cli import main

sys.exit(main())
