"""The embedding job: options, wiring of the ``transforms`` stages, and the ``run`` entry point."""
