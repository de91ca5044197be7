"""biLM training (Peters et al. 2018, bilm-tf's recipe): ``python -m elmo.training.train``.

``vocab`` (word vocabularies in bilm-tf's format), ``data`` (sentences packed into parallel streams, read in
windows by step number), ``model`` (the trainable biLM and its export to the official layout) and ``train`` (the
command: loop, checkpoints, evaluation, DDP). Inference never imports this package.
"""
