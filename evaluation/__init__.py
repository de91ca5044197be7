"""Research evaluations of trained biLMs, kept outside the core ``elmo`` package (they import it, it never imports
them): ``evaluation.polysemy`` (word-sense separation per layer)."""
