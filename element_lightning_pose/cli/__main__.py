"""``python -m element_lightning_pose.cli`` is ``elp``."""

from element_lightning_pose.cli import console

console()
