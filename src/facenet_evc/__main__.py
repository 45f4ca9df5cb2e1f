import sys

from facenet_evc.cli import main

sys.exit(main())
