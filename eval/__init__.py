"""Research evaluations of trained biLMs, kept outside the core ``elmo`` package (they import it, it never imports
them): ``eval.polysemy`` (word-sense separation per layer)."""
