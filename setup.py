"""Packaging: the `elmo` model package, the Beam `transforms` and the `pipeline` entry point."""

from setuptools import find_packages, setup

# Pinned: the same versions on every machine, CI, Flink and Dataflow workers.
MODEL_REQUIRES = [
    "torch==2.15.0",
    "numpy==2.4.6",
    "h5py==3.16.0",
    "fsspec==2026.9.0",
]
PIPELINE_REQUIRES = [
    "apache-beam==2.77.0",
    "pyarrow==25.0.0",
]
TEST_REQUIRES = [
    "pytest==9.2.0",
    "ruff==0.17.6",
    # the pipeline's output tests read the Parquet back with these
    "pandas==3.1.1",
    "lancedb==0.40.0",
    # the corpus builder's sentence splitter, so its test runs instead of skipping
    "blingfire==0.1.8",
]

setup(
    name="elmo-beam",
    version="0.1.0",
    description="ELMo deep contextualized word embeddings (Peters et al. 2018) as an Apache Beam job",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["elmo", "elmo.*", "pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=MODEL_REQUIRES + PIPELINE_REQUIRES,
    # "tools": the polysemy picture (python -m elmo.polysemy --plot); "corpus": the corpus builder's splitter.
    extras_require={"test": TEST_REQUIRES, "tools": ["matplotlib==3.11.2"], "corpus": ["blingfire==0.1.8"]},
    entry_points={"console_scripts": ["elmo-embed=elmo.embed:main"]},
)
