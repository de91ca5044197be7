"""Research and demonstration commands built on the public API (``elmo.Elmo``); inference never imports them.

``python -m elmo.tools.drift``: how far the zero and the canonical initial state are from a warmed-up stateful run
(the README's table).
"""
