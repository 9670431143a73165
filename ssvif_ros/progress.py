"""Progress bars of the command-line tools: shown on a terminal, silent otherwise.

Every tool gets its bar here so that a tool run from a script, CI or a pipe writes no bar
frames into a log (tqdm's own default shows the bar on any stream).
"""

import sys


def on_terminal() -> bool:
    """True when stderr (where the bars go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable=None, total=None, desc: str = '', unit: str = 'it', quiet: bool = False,
        **kwargs):
    """A tqdm bar on stderr, disabled with ``quiet`` or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=quiet or not on_terminal(), **kwargs)
