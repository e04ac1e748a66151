"""Progress bars: lively on a terminal, one line every 30 s in logs and CI."""

import sys

from tqdm import tqdm


def progress(iterable=None, **options) -> tqdm:
    interval = 0.5 if sys.stderr.isatty() else 30
    return tqdm(iterable, mininterval=interval, **options)
