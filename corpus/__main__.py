"""``python -m corpus`` is ``python -m corpus.build``."""

from corpus.build import run

run()
