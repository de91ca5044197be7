"""Benchmark worker for the REFERENCE implementation (AllenNLP 2.10.1's ``_ElmoBiLm``); run with its venv python.

    build/venv-reference/bin/python bench/reference_worker.py --options O --weights W --sentences S.json --threads 2

``scripts/install_reference.sh`` makes that venv. Zero initial LSTM state for every batch
(``_elmo_lstm.reset_states()`` before each one; AllenNLP's ELMo LSTM is stateful otherwise), CPU, no grad,
float32 unless ``--dtype float64``.
The timed work per batch is what ``ElmoEmbedder.batch_to_embeddings`` does: ``batch_to_ids``, the biLM forward
pass and removing the sentence boundary positions.

AllenNLP imports torchvision at module level for its vision modules, which ELMo never uses. If torchvision cannot
be imported next to this torch (no PyPI torchvision is built for every torch release), ``import_allennlp_elmo``
puts a stub ``torchvision`` in ``sys.modules`` for the import only; the stub raises if anything calls into it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

from worker_common import build_parser, run_worker, set_threads, torch_dtype


class _Placeholder:
    """Stands for any torchvision class or function; AllenNLP's ELMo path never calls one."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is stubbed in the reference worker: vision code is not available")

    def __class_getitem__(cls, item):
        return cls


class _StubModule(types.ModuleType):
    """A torchvision (sub)module whose every attribute is a placeholder."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``torchvision`` and every ``torchvision.*`` import to a ``_StubModule``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []  # a package, so that ``import torchvision.ops.boxes`` resolves through this finder
        module.__version__ = "0.0.0+stub"


def _torchvision_note() -> str:
    """Imports the real torchvision if it works; otherwise installs the stub. Returns what was done."""
    try:
        import torchvision

        return f"real torchvision {torchvision.__version__}"
    except Exception as error:  # a torchvision built for another torch fails in several ways
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _StubFinder())
        return f"stub torchvision ({type(error).__name__}: {str(error).splitlines()[0][:120]})"


def import_allennlp_elmo():
    """``(_ElmoBiLm, batch_to_ids, note)``, with note saying whether torchvision is real or stubbed."""
    note = _torchvision_note()
    from allennlp.modules.elmo import _ElmoBiLm, batch_to_ids

    return _ElmoBiLm, batch_to_ids, note


def main() -> None:
    """Loads ``_ElmoBiLm`` from the same options and weights files and times it on the same batches."""
    args = build_parser(__doc__).parse_args()
    set_threads(args.threads)

    import torch

    elmo_bilm_class, batch_to_ids, note = import_allennlp_elmo()
    from allennlp.nn.util import remove_sentence_boundaries

    bilm = elmo_bilm_class(args.options, args.weights, requires_grad=False).to(torch_dtype(args.dtype)).eval()
    bilm = bilm.to(args.device)

    @torch.no_grad()
    def embed_batch(sentences):
        bilm._elmo_lstm.reset_states()  # zero initial state, like ours
        output = bilm(batch_to_ids(sentences).to(args.device))
        layers = [remove_sentence_boundaries(a, output["mask"])[0] for a in output["activations"]]
        return torch.stack(layers)  # (L+1, B, T_max, 2P)

    n_params = sum(p.numel() for p in bilm.parameters())
    run_worker(args, embed_batch, {"impl": "allennlp", "params": n_params, "torchvision": note})


if __name__ == "__main__":
    main()
