import sys

from ringmaster_handler.cli import main

sys.exit(main())
