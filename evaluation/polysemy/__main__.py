"""``python -m evaluation.polysemy --model DIR [--json FILE] [--plot FILE.png]``."""

from evaluation.polysemy.evaluate import main

main()
