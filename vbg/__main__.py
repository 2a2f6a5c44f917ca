import sys

from vbg.cli import main

sys.exit(main())
