"""The Flex Template's launcher program (FLEX_TEMPLATE_PYTHON_PY_FILE in dataflow/flex_template.Dockerfile).

Dataflow's launcher runs ``python main.py --name=value ...`` with the template's parameters and its own Beam
flags; ``pipeline.dataflow.flex_argv`` turns its true/false parameters into switches, and ``pipeline.run.run`` (the
one launcher) checks them, adds the Dataflow defaults (``pipeline.dataflow.complete_argv``) and writes or submits
the job.
"""

import logging
import sys

from pipeline.dataflow import flex_argv
from pipeline.run import run


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(flex_argv(sys.argv[1:]))


if __name__ == "__main__":
    main()
