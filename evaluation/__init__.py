"""Research evaluations of trained biLMs, kept outside the core ``elmo`` package (they import it, it never imports
them): ``evaluation.polysemy`` (word-sense separation per layer), ``evaluation.initial_state`` (zero vs canonical
initial state against a warmed-up stateful run)."""
