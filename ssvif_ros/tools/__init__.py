"""Command-line tools around the fusion node: a paired-image publisher and an output recorder."""

from typing import List, Optional, Sequence, Tuple


def split_ros_args(argv: Optional[Sequence[str]]) -> Tuple[List[str], List[str]]:
    """Split a command line into (tool arguments, ``--ros-args ...`` for rclpy.init)."""
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        return argv[:i], argv[i:]
    return argv, []
