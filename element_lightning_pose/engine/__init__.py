"""The pose engine: data I/O, networks, training, inference, smoothing.

Nothing below this package imports DataJoint; the schema modules call into it.
"""
