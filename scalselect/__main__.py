import sys

from scalselect.cli import main

sys.exit(main())
