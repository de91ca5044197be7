"""Packaging: the `elmo` model package, the Beam `transforms`, the `pipeline` entry point, `search` and the `evaluation`
research tools."""

from setuptools import find_packages, setup

# Pinned: the same versions on every machine, CI, Flink and Dataflow workers.
MODEL_REQUIRES = [
    "torch==2.15.0",
    "numpy==2.4.6",
    "h5py==3.16.0",
    # Unicode grapheme clusters (\X) and properties for the tokenizer (elmo/tokenize.py)
    "regex==2026.11.19",
    # one URL scheme everywhere outside Beam: gs:// and s3:// through fsspec. Not 2026.9.0/2026.10.1 (which Beam
    # 2.77 would allow): a gs:// read through fsspec's new prefetcher hung the object-store tests.
    "fsspec==2025.12.0",
    "gcsfs==2025.12.0",
    "s3fs==2025.12.0",
    # builds the fused LSTM step (elmo/fused_step.py) with PyTorch's extension builder; g++ comes from the system
    "ninja==1.13.2",
]
PIPELINE_REQUIRES = [
    # The Python SDK; the Flink job server stays at Beam 2.62.0 (the newest Flink runner the Maven mirror serves),
    # a pairing tests/test_flink_cluster.py runs on every CI run: docs/flink.md. gcp/aws: Beam's own gs:// and
    # s3:// filesystems and the Dataflow runner. pyarrow: the newest this Beam allows (< 26).
    "apache-beam[gcp,aws]==2.77.0",
    "pyarrow==25.0.1",
    "orjson==3.13.0",  # the Vertex AI lines' vectors (transforms/write.py); also what Beam's gcp extra installs
]
# the search index (search/): LanceDB, embedded (no server), local or gs:// / s3://
SEARCH_REQUIRES = ["lancedb==0.40.0"]
TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # ./run_tests.sh -m "not integration" -n 2: the unit suite on both cores
    # property-based tests of reading and tokenization (tests/test_hostile_text.py)
    "hypothesis==6.170.17",
    "ruff==0.17.6",
    # the pipeline's output tests read the Parquet back with these
    "pandas==3.1.1",
    *SEARCH_REQUIRES,
    # the word maps of search.plot and evaluation.polysemy (the "tools" extra), so their tests run
    # instead of skipping
    "matplotlib==3.11.2",
    # the corpus builder's sentence splitter, so its test runs instead of skipping
    "blingfire==0.1.8",
    # real storage servers the object-store tests start: GCS-compatible and S3-compatible
    "gcp-storage-emulator==2026.7.19",
    "moto[server]==5.2.5",
]

setup(
    name="elmo-beam",
    version="0.1.0",
    description="ELMo deep contextualized word embeddings (Peters et al. 2018) as an Apache Beam job",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            *("elmo", "elmo.*", "pipeline", "pipeline.*", "transforms", "transforms.*", "search", "search.*"),
            # research evaluations (python -m evaluation.polysemy), outside the core model package
            *("evaluation", "evaluation.*"),
        ]
    ),
    # the default model (elmo.model_dir.default_model_dir) is installed inside the package, so every install finds it
    package_data={"elmo": ["models/*/*", "csrc/*.cpp"], "evaluation.polysemy": ["senses.jsonl", "README.md"]},
    install_requires=MODEL_REQUIRES + PIPELINE_REQUIRES,
    # "tools": the polysemy pictures (python -m evaluation.polysemy --plot) and python -m search.plot;
    # "corpus": the corpus builder's splitter; "search": the embedded vector index of python -m search.index /
    # search.query.
    extras_require={
        "test": TEST_REQUIRES,
        "tools": ["matplotlib==3.11.2"],
        "corpus": ["blingfire==0.1.8"],
        "search": SEARCH_REQUIRES,
    },
    entry_points={"console_scripts": ["elmo-embed=elmo.embed:main"]},
)
