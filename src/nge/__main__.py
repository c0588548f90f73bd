import sys

from nge.cli import main

sys.exit(main())
