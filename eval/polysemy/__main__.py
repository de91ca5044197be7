"""``python -m eval.polysemy --model DIR [--json FILE] [--plot FILE.png]``."""

from eval.polysemy.evaluate import main

main()
