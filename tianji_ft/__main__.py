import sys

from tianji_ft.cli import main

sys.exit(main())
