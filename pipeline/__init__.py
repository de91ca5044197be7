"""The embedding job: options, wiring of the ``transforms`` stages, and the ``run`` entry point."""

from elmo.malloc import pause_collector_while_command_imports

pause_collector_while_command_imports()  # `python -m pipeline.run` only (elmo.malloc)
