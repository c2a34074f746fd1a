"""``python -m element_lightning_pose.cli`` is ``elp``."""

import sys

from element_lightning_pose.cli import main

sys.exit(main())
