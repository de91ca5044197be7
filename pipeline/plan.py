"""What the launcher settles before building the graph: input files, model facts, run directory, manifest base."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import StandardOptions

from elmo import ElmoConfig, LayerChoice
from elmo.api import DEFAULT_INITIAL_STATE
from elmo.errors import UsageError
from elmo.model import BiLm
from elmo.model_dir import MODEL_FILES, OPTIONS_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from elmo.tokenize import TokenizerConfig
from elmo.weights import fingerprint, load_weights
from pipeline.checks import (
    check_input_files,
    check_local_device,
    check_model_dir,
    check_output_outside_input,
    check_sizes,
    is_local_runner,
)
from pipeline.memory import check_local_run, local_workers
from pipeline.options import EmbedOptions, option_names
from pipeline.previous import PreviousRun, resolve_previous_run
from transforms.files import glob_root, localize_directory, match_files, read_text
from transforms.incremental import settings_digest
from transforms.run_folder import run_folder
from transforms.write import SCHEMA_VERSION

_LOG = logging.getLogger(__name__)
CREDENTIAL_FLAGS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token")  # Beam's; refused


@dataclass(frozen=True)
class RunPlan:
    """Everything the graph needs that is known before it runs."""

    files: list[tuple[str, int]]  # (path, bytes), sorted
    root: str  # glob root: document ids are relative to it
    tokenizer_json: str
    max_window_tokens: int
    window_overlap: int
    fingerprint: str
    output_dim: int  # 2P
    n_layers: int  # L+1
    initial_state: str  # the model's deterministic initial LSTM state (elmo.api), recorded in the manifest
    layers: str  # normalised layer choice
    run_id: str
    run_dir: str
    vector_settings: dict[str, Any]  # every setting that changes a sentence's vectors (the content key's salt)
    settings_digest: str  # hash of vector_settings
    previous: PreviousRun | None  # --previous_run, checked
    run_date: str | None
    num_shards: int  # files per output kind; 0: one per bundle (the runner's count)

    def manifest_base(self, opts: EmbedOptions, runner: str | None) -> dict[str, Any]:
        """The manifest without its counts and outputs."""
        own = option_names()
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "runner": runner,
            "options": {k: v for k, v in sorted(opts.get_all_options().items()) if k in own},
            "input": {"glob": opts.input, "root": self.root, "files": [{"path": p, "bytes": n} for p, n in self.files]},
            "model": {
                "dir": opts.model,
                "fingerprint": self.fingerprint,
                "output_dim": self.output_dim,
                "n_layers": self.n_layers,
                "initial_state": self.initial_state,
                "layers": self.layers,
                "dtype": opts.dtype,
                "tokenizer": json.loads(self.tokenizer_json),
                "max_window_tokens": self.max_window_tokens,
                "window_overlap": self.window_overlap,
                "vector_settings": self.vector_settings,
                "vector_settings_digest": self.settings_digest,
            },
            "run_date": self.run_date,
            "num_shards": self.num_shards,
            "previous_run": self.previous.manifest_entry() if self.previous else None,
        }


@dataclass(frozen=True)
class _ModelFacts:
    config: ElmoConfig
    fingerprint: str
    initial_state: str


def _read_model(model_dir: str) -> _ModelFacts:
    """Config and fingerprint of a model directory, from its weights alone (no device, no warm-up run)."""
    local = localize_directory(model_dir, MODEL_FILES)
    config = ElmoConfig.from_json(os.path.join(local, OPTIONS_FILE))
    bilm = BiLm(config)
    load_weights(bilm, os.path.join(local, WEIGHTS_FILE))
    return _ModelFacts(bilm.config, fingerprint(bilm), DEFAULT_INITIAL_STATE)  # the file decided CNN_proj


def default_num_shards(local_runner: bool) -> int:
    """Files per output kind when ``--num_shards`` is not given: 1 on the local runner (one file, fixed name); 0 on
    a distributed runner, where a fixed count makes Beam group each file's records on one worker (on Flink's batch
    runner one in-memory list per file, docs/flink.md): there every bundle writes its own file."""
    return 1 if local_runner else 0


def plan_run(opts: EmbedOptions, runner: str | None = None) -> RunPlan:
    """Matches the input glob, reads the model's tokenizer settings and fingerprint, and names the run directory.

    Fails fast with ``UsageError`` (before any worker starts or any file is touched) on credentials given as flags,
    sizes out of range, a glob matching nothing or a directory, an output the input glob would read back, a model
    directory without its files, layer mix weights that do not fit the model, impossible window sizes, a run id
    that is not a plain name, or (on a local runner: ``runner``, else the options') a GPU this machine lacks.
    """
    secrets = [f"--{name}" for name in CREDENTIAL_FLAGS if opts.get_all_options().get(name)]
    if secrets:
        raise UsageError(
            f"{', '.join(secrets)}: credentials are not taken from flags (they end up in logs and job graphs); "
            "use the AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a profile "
            "(AWS_PROFILE) or an instance role"
        )
    if not opts.input:
        raise UsageError("--input GLOB is required")
    check_sizes(opts)
    files = match_files(opts.input)
    if not files:
        raise UsageError(f"--input {opts.input!r} matches no file")
    check_input_files(opts.input, files)
    check_output_outside_input(opts.input, files, opts.output)
    check_model_dir(opts.model)
    local = is_local_runner(runner or opts.view_as(StandardOptions).runner)  # the workers are this machine
    if local:
        check_local_device(opts.device, opts.bf16)
        if opts.get_all_options().get("execution_mode_for_batch"):
            raise UsageError("--execution_mode_for_batch is a flag of the Flink runner; this run uses the local runner")
    tokenizer_json = read_text(opts.model.rstrip("/") + "/" + TOKENIZER_FILE)
    tokenizer = TokenizerConfig.from_json(tokenizer_json)
    model = _read_model(opts.model)
    choice = LayerChoice.parse(opts.layers)
    if choice.kind == "weights" and len(choice.weights) != model.config.n_output_layers:
        raise UsageError(f"--layers gives {len(choice.weights)} weights; the model has {model.config.n_output_layers}")
    max_tokens = opts.max_window_tokens or tokenizer.max_sentence_tokens
    overlap = tokenizer.window_overlap if opts.window_overlap is None else opts.window_overlap
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise UsageError(f"need 0 <= --window_overlap ({overlap}) < --max_window_tokens ({max_tokens})")
    if local:
        estimate = check_local_run(
            files,
            token_vectors=opts.token_vectors,
            layers=str(choice),
            output_dim=model.config.output_dim,
            n_layers=model.config.n_output_layers,
            dtype=opts.dtype,
            workers=local_workers(opts.get_all_options()),
            token_cache_bytes=opts.token_cache_size * model.config.lstm.projection_dim * 4,  # float32 vectors
            limit_gb=opts.local_memory_limit_gb,
        )
        _LOG.info("Estimated peak memory of this local run: %.1f GB (docs/pipeline.md)", estimate / 1e9)
    vector_settings = {
        "fingerprint": model.fingerprint,
        "initial_state": model.initial_state,
        "layers": str(choice),
        "dtype": opts.dtype,
        "windows": [max_tokens, overlap],
        "tokenizer": json.loads(tokenizer_json),
        "batch_invariant": opts.batch_invariant,
        "bf16": opts.bf16,
        "token_vectors": opts.token_vectors,
    }
    num_shards = default_num_shards(local) if opts.num_shards is None else opts.num_shards
    settings = {
        **vector_settings,
        "input": opts.input,
        "files": files,
        "format": [opts.input_format, opts.id_field, opts.text_field, opts.max_document_bytes],
        "num_shards": num_shards,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    if opts.run_id is not None:  # an explicit --run_id= is checked, never replaced
        run_id = opts.run_id
    else:
        run_id = opts.run_date or f"run-{digest}"
    run_dir = run_folder(opts.output, run_id)
    previous = resolve_previous_run(opts.previous_run, opts.output, run_dir, opts.run_date, vector_settings, opts.full)
    return RunPlan(
        files=files,
        root=glob_root(opts.input),
        tokenizer_json=tokenizer_json,
        max_window_tokens=max_tokens,
        window_overlap=overlap,
        fingerprint=model.fingerprint,
        output_dim=model.config.output_dim,
        n_layers=model.config.n_output_layers,
        initial_state=model.initial_state,
        layers=str(choice),
        run_id=run_id,
        run_dir=run_dir,
        vector_settings=vector_settings,
        settings_digest=settings_digest(vector_settings),
        previous=previous,
        run_date=opts.run_date,
        num_shards=num_shards,
    )
