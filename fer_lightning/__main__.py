import sys

from fer_lightning.cli import main

sys.exit(main())
