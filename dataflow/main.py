"""The Flex Template's launcher program (FLEX_TEMPLATE_PYTHON_PY_FILE in dataflow/flex_template.Dockerfile).

Dataflow's launcher runs ``python main.py --name=value ...`` with the template's parameters and its own Beam
flags; ``pipeline.dataflow.launch`` checks them, adds the Dataflow defaults and writes or submits the job.
"""

import logging
import sys

from pipeline.dataflow import flex_argv, launch


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launch(flex_argv(sys.argv[1:]))


if __name__ == "__main__":
    main()
