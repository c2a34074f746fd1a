"""element-lightning-pose: semi-supervised pose estimation (Lightning Pose method) as a DataJoint Element.

The engine (``element_lightning_pose.engine``) trains and runs the networks without any
database; the schema modules (``train``, ``model``, ``ensemble``) store what it produces.
"""

from element_lightning_pose.engine.allocation import prefer_huge_pages
from element_lightning_pose.version import __version__

# before anything imports torch, which reads it once (see engine.allocation: a batch's pages)
prefer_huge_pages()

__all__ = ["__version__"]
