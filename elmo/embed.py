"""``python -m elmo.embed``: embed a file of sentences into HDF5, in the layout of AllenNLP's old ``allennlp elmo``.

Input: one whitespace-tokenized sentence per line (UTF-8). Output: one float32 dataset per line, named by the
line's 0-based index: (L+1, T, 2P) with ``--all``, (T, 2P) with ``--top`` (last layer) or ``--average`` (mean of
the layers); plus ``sentence_to_index``, a JSON map from sentence text to line index (last one wins), unless
``--forget-sentences``. ``--use-sentence-keys`` names datasets by sentence text instead (duplicates are an error).

The output appears only when complete: it is written to a temporary file next to it and renamed into place (an
interrupted run leaves the previous file, if any, untouched); remote outputs are uploaded once written. An output
that is the input or a model file is refused before anything is written. Errors: one line and exit status 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import h5py
import torch

from elmo import storage
from elmo.api import DEFAULT_INITIAL_STATE, INITIAL_STATES, Elmo, validate_device
from elmo.bf16 import bf16_refusal
from elmo.cli import add_debug_flag, run_cli
from elmo.config import DEFAULT_TOKEN_CACHE_SIZE
from elmo.errors import ConfigError, UsageError
from elmo.mix import LayerChoice
from elmo.retries import configure_client_retries

PROG = "python -m elmo.embed"
UTF8_BOM = b"\xef\xbb\xbf"


class InputError(ConfigError):
    """A line of the input cannot be embedded; the message names the file and line number."""


def read_sentences(path: str) -> list[list[str]]:
    """Reads one whitespace-tokenized sentence per line; raises ``InputError`` naming any bad line (1-based).

    A UTF-8 byte order mark at the very start of the file is dropped (anywhere else it stays part of a token)."""
    sentences = []
    with storage.open_url(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}:{number}: line is not valid UTF-8 ({err.reason} at byte {err.start})"
                ) from None
            if "\x00" in line:
                raise InputError(f"{path}:{number}: line contains a NUL byte")
            tokens = line.split()
            if not tokens:
                raise InputError(f"{path}:{number}: empty line; every line must hold a sentence")
            sentences.append(tokens)
    return sentences


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def write_embeddings(
    model: Elmo,
    sentences: list[list[str]],
    output: str,
    choice: LayerChoice,
    batch_size: int,
    stateful: bool,
    use_sentence_keys: bool = False,
    forget_sentences: bool = False,
) -> int:
    """Embeds ``sentences`` batch by batch (file order when stateful) and writes the HDF5 file; returns tokens.

    The file is written under a temporary name in the output's directory and renamed into place at the end; on
    any failure or interrupt the temporary file is removed and an existing ``output`` is left as it was."""
    keys = [" ".join(s) for s in sentences] if use_sentence_keys else [str(i) for i in range(len(sentences))]
    if use_sentence_keys and len(set(keys)) != len(keys):
        raise InputError("duplicate sentences cannot be used as keys (--use-sentence-keys)")
    if storage.is_remote(output):  # HDF5 needs a seekable local file: write it here, then upload it
        with tempfile.TemporaryDirectory() as tmp:  # the object appears only once the upload completes
            local = os.path.join(tmp, "embeddings.hdf5")
            tokens = write_embeddings(
                model, sentences, local, choice, batch_size, stateful, use_sentence_keys, forget_sentences
            )
            storage.upload_file(local, output)
        return tokens
    directory = os.path.dirname(os.path.abspath(output))
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(output)}.", suffix=".partial")
    os.close(fd)
    try:
        index = not (forget_sentences or use_sentence_keys)
        tokens = _write_hdf5(model, sentences, keys, partial, choice, batch_size, stateful, index)
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, output)
    except BaseException:  # interrupted or failed: no partial file anywhere, a previous output untouched
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return tokens


def _write_hdf5(
    model: Elmo,
    sentences: list[list[str]],
    keys: list[str],
    path: str,
    choice: LayerChoice,
    batch_size: int,
    stateful: bool,
    index: bool,
) -> int:
    """Writes one dataset per sentence (and ``sentence_to_index`` when ``index``) into ``path``; returns tokens."""
    tokens = 0
    with h5py.File(path, "w") as out:
        for batch in _batches(len(sentences), batch_size):
            vectors = model.embed(
                [sentences[i] for i in batch], layers=choice, batch_size=batch_size, stateful=stateful
            )
            for i, array in zip(batch, vectors, strict=True):
                out.create_dataset(keys[i], data=array)
                tokens += len(sentences[i])
        if index:
            index_map = {" ".join(s): str(i) for i, s in enumerate(sentences)}
            out.create_dataset("sentence_to_index", data=[json.dumps(index_map)], dtype=h5py.string_dtype())
    return tokens


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: str, b: str) -> bool:
    """Whether two paths (local or URLs) name the same file: resolved paths, or ``samefile`` when both exist."""
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(output: str, protected: dict[str, str]) -> None:
    """Refuses (``UsageError``) an ``--output`` that is one of the ``protected`` files (flag -> path: the input,
    the model files) under any spelling or symlink, a directory, or a path whose directory does not exist."""
    for flag, path in protected.items():
        if path and _same_file(output, path):
            raise UsageError(f"--output {output} is the same file as {flag} {path}: refusing to overwrite it")
    if storage.is_remote(output):
        return
    if os.path.isdir(output):
        raise UsageError(f"--output {output} is a directory; give the HDF5 file to write")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {output}: directory {directory} does not exist")


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m elmo.embed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--options", required=True, help="options.json of the biLM (path, gs:// or s3://)")
    parser.add_argument(
        "--weights",
        required=True,
        help="weights .hdf5 of the biLM (official layout; path, gs:// or s3://)",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="text file, one whitespace-tokenized sentence per line (path, gs:// or s3://)",
    )
    parser.add_argument("--output", required=True, help="HDF5 file to write (path, gs:// or s3://)")
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument(
        "--all",
        dest="layers",
        action="store_const",
        const="all",
        help="all layers, (L+1, T, 2P) per sentence (default)",
    )
    layers.add_argument("--top", dest="layers", action="store_const", const="top", help="top layer, (T, 2P)")
    layers.add_argument(
        "--average", dest="layers", action="store_const", const="average", help="mean of the layers, (T, 2P)"
    )
    layers.add_argument(
        "--mix",
        dest="layers",
        metavar="W0,W1,...",
        help="scalar mix with these pre-softmax weights (optionally ';gamma=G'), (T, 2P)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    parser.add_argument(
        "--stateful", action="store_true", help="carry LSTM state across batches in file order, like the original tools"
    )
    parser.add_argument(
        "--initial-state",
        choices=INITIAL_STATES,
        default=DEFAULT_INITIAL_STATE,
        help="fixed initial state of the deterministic mode (default warm)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument(
        "--token-cache-size",
        type=int,
        default=DEFAULT_TOKEN_CACHE_SIZE,
        help="distinct tokens whose char-CNN vectors are kept across batches (0: none)",
    )
    parser.add_argument(
        "--bit-exact", action="store_true", help="same bytes for a sentence whatever batch it is in (~1.3x time)"
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 GEMMs: GPUs and CPUs with AMX only")
    parser.add_argument("--use-sentence-keys", action="store_true", help="name datasets by sentence text")
    parser.add_argument("--forget-sentences", action="store_true", help="do not write sentence_to_index")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2 with a one-line message for bad flags, files or input)."""
    configure_client_retries()  # before any storage client exists
    return run_cli(_main, argv, prog=PROG)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, not {args.batch_size}")
    try:
        choice = LayerChoice.parse(args.layers or "all")
    except ConfigError as err:
        raise UsageError(f"--mix {args.layers!r}: {err}") from None
    try:
        validate_device(args.device)
    except ConfigError as err:
        raise UsageError(f"--device: {err}") from None
    if not storage.is_remote(args.input) and not os.path.isfile(args.input):
        raise UsageError(f"--input {args.input} does not exist or is not a file")
    check_output(args.output, {"--input": args.input, "--options": args.options, "--weights": args.weights})
    sentences = read_sentences(args.input)
    if args.token_cache_size < 0:
        raise UsageError(f"--token-cache-size {args.token_cache_size}: must be 0 (no cache) or more")
    refusal = bf16_refusal(torch.device(args.device)) if args.bf16 else None
    if refusal:
        raise UsageError(f"--bf16: {refusal}; leave it off (float32) on this machine")
    model = Elmo.load(
        args.options,
        args.weights,
        device=args.device,
        initial_state=args.initial_state,
        token_cache_size=args.token_cache_size,
        bit_exact=args.bit_exact,
        bf16=args.bf16,
    )
    try:
        choice = model.layer_choice(choice)
    except ConfigError as err:
        raise UsageError(f"--mix: {err}") from None
    start = time.perf_counter()
    with torch.inference_mode():
        tokens = write_embeddings(
            model,
            sentences,
            args.output,
            choice,
            args.batch_size,
            args.stateful,
            args.use_sentence_keys,
            args.forget_sentences,
        )
    seconds = time.perf_counter() - start
    print(
        f"embedded {len(sentences)} sentences, {tokens} tokens in {seconds:.2f}s "
        f"({tokens / max(seconds, 1e-9):.0f} tokens/s) -> {args.output}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
