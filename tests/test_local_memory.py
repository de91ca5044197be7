"""The local runner's memory estimate and refusal (pipeline/memory.py): pure functions, no pipeline runs."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from pipeline import memory
from pipeline.memory import (
    LocalMemoryError,
    available_memory_bytes,
    cgroup_available_bytes,
    check_local_memory,
    check_local_run,
    estimate_local_peak_bytes,
    gzip_uncompressed_size,
    input_bytes,
    local_workers,
    meminfo_available_bytes,
)

SMALL = {"output_dim": 256, "n_layers": 3, "dtype": "float32"}  # elmo-en-small
GB = 10**9
MEMINFO = """MemTotal:       24684084 kB
MemFree:        16902328 kB
MemAvailable:   20000000 kB
Buffers:          123456 kB
Cached:          5000000 kB
"""


def estimate(n_bytes: int, *, token_vectors=False, layers="average", dtype="float32", workers=1) -> int:
    settings = {**SMALL, "dtype": dtype}
    return estimate_local_peak_bytes(
        [("a.txt", n_bytes)], token_vectors=token_vectors, layers=layers, workers=workers, **settings
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------- estimate
def test_estimate_grows_with_input_and_starts_at_the_base():
    sizes = [0, 1_000, 10**6, 10**7, 10**8]
    values = [estimate(n) for n in sizes]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert values[0] == memory.BASE_BYTES
    files = [("a.txt", 10**6), ("b.txt", 2 * 10**6)]
    assert estimate_local_peak_bytes(files, token_vectors=False, layers="top", **SMALL) == estimate(3 * 10**6)


def test_token_vectors_layers_all_and_workers_increase_it_float16_decreases_token_vectors():
    n = 10**7
    plain = estimate(n)
    with_tokens = estimate(n, token_vectors=True)
    assert with_tokens > plain
    assert estimate(n, layers="all") > plain
    assert estimate(n, layers="all", token_vectors=True) > max(with_tokens, estimate(n, layers="all"))
    assert estimate(n, workers=2) > plain
    assert estimate(n, token_vectors=True, dtype="float16") < with_tokens
    assert estimate(n, layers="top") == estimate(n, layers="0.2,0.5,1.0") == plain  # one vector per token


def test_layers_all_scales_the_vector_part_by_the_number_of_layers():
    n = 10**7
    text = memory.TEXT_BYTES_PER_INPUT_BYTE * n
    vectors_average = estimate(n) - memory.BASE_BYTES - text
    vectors_all = estimate(n, layers="all") - memory.BASE_BYTES - text
    assert vectors_all == pytest.approx(3 * vectors_average, rel=1e-6)


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        estimate(10, dtype="int8")


# ---------------------------------------------------------------------------------------------- input sizes
def test_gzip_size_is_read_from_the_isize_trailer(tmp_path):
    text = ("The bank raised its rates again this year. " * 5000).encode()
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(text))
    assert os.path.getsize(path) < len(text) // 10  # repetitive: far more than the assumed 4x
    assert gzip_uncompressed_size(str(path)) == len(text)
    files = [(str(path), os.path.getsize(path)), (str(tmp_path / "plain.txt"), 1000)]
    assert input_bytes(files) == len(text) + 1000


def test_compressed_inputs_without_a_cheap_size_use_the_ratio(tmp_path):
    assert input_bytes([("gs://bucket/in/a.txt.gz", 1000)]) == 1000 * memory.COMPRESSION_RATIO
    assert input_bytes([("s3://bucket/in/a.jsonl.bz2", 1000)]) == 1000 * memory.COMPRESSION_RATIO
    assert input_bytes([(str(tmp_path / "missing.txt.gz"), 1000)]) == 1000 * memory.COMPRESSION_RATIO
    # two gzip members: the trailer gives the last member's size only, smaller than the file: ratio instead
    path = tmp_path / "members.gz"
    path.write_bytes(gzip.compress(os.urandom(5000)) + gzip.compress(b"x"))
    assert gzip_uncompressed_size(str(path)) == int(os.path.getsize(path) * memory.COMPRESSION_RATIO)
    empty = tmp_path / "empty.gz"
    empty.write_bytes(b"")
    assert gzip_uncompressed_size(str(empty)) == 0


def test_sample_data_gzip(tmp_path):
    sample = Path(__file__).resolve().parent.parent / "sample_data" / "sotu" / "1861-lincoln.txt.gz"
    assert gzip_uncompressed_size(str(sample)) == len(gzip.decompress(sample.read_bytes()))


# ----------------------------------------------------------------------------------------- available memory
def test_meminfo_parsing(tmp_path):
    write(tmp_path / "meminfo", MEMINFO)
    assert meminfo_available_bytes(str(tmp_path)) == 20_000_000 * 1024
    write(tmp_path / "meminfo", "MemTotal: 100 kB\nMemFree: 10 kB\nCached: 5 kB\n")  # kernel < 3.14
    assert meminfo_available_bytes(str(tmp_path)) == 15 * 1024
    assert meminfo_available_bytes(str(tmp_path / "nowhere")) is None


def test_cgroup_v2_limit_with_reclaimable_cache(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self" / "cgroup", "0::/job/worker\n")
    write(proc / "meminfo", MEMINFO)
    write(cg / "job" / "worker" / "memory.max", "max\n")
    write(cg / "job" / "memory.max", f"{4 * GB}\n")
    write(cg / "job" / "memory.current", f"{1 * GB}\n")
    write(cg / "job" / "memory.stat", f"anon 100\ninactive_file {GB // 2}\nactive_file 7\n")
    assert cgroup_available_bytes(str(proc), str(cg)) == 4 * GB - GB // 2
    assert available_memory_bytes(str(proc), str(cg)) == 4 * GB - GB // 2  # below MemAvailable (20.5 GB)
    write(cg / "job" / "memory.max", "max\n")
    assert cgroup_available_bytes(str(proc), str(cg)) is None
    assert available_memory_bytes(str(proc), str(cg)) == 20_000_000 * 1024


def test_cgroup_v2_namespaced_root(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self" / "cgroup", "0::/\n")
    write(cg / "memory.max", f"{2 * GB}\n")
    write(cg / "memory.current", f"{GB // 4}\n")
    assert cgroup_available_bytes(str(proc), str(cg)) == 2 * GB - GB // 4


def test_cgroup_v1(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self" / "cgroup", "5:cpu,cpuacct:/\n4:memory:/process_api/abc\n0::/\n")
    write(proc / "meminfo", MEMINFO)
    v1 = cg / "memory"  # a namespaced mount: our cgroup shows as the root
    write(v1 / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "unlimited"
    write(v1 / "memory.usage_in_bytes", f"{GB}\n")
    write(v1 / "memory.stat", "cache 5\nhierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 0\n")
    assert cgroup_available_bytes(str(proc), str(cg)) is None
    assert available_memory_bytes(str(proc), str(cg)) == 20_000_000 * 1024
    write(v1 / "memory.stat", f"hierarchical_memory_limit {3 * GB}\ntotal_inactive_file {GB // 2}\n")
    assert cgroup_available_bytes(str(proc), str(cg)) == 3 * GB - GB // 2
    assert available_memory_bytes(str(proc), str(cg)) == 3 * GB - GB // 2


def test_no_proc_falls_back_to_physical_memory(tmp_path):
    value = available_memory_bytes(str(tmp_path / "no-proc"), str(tmp_path / "no-cgroup"))
    assert value > 0  # os.sysconf on Linux; 0 ("unknown", no check) only where even that is missing


def test_this_machine_has_some_memory():
    assert available_memory_bytes() > 100 * 2**20


# ---------------------------------------------------------------------------------------------------- check
def test_check_passes_within_the_fraction_and_when_unknown():
    check_local_memory(8 * GB, 10 * GB)  # exactly 80%
    check_local_memory(100 * GB, 0)  # unknown: no check


def test_refusal_message_has_the_numbers_and_the_advice():
    with pytest.raises(LocalMemoryError) as info:
        check_local_memory(
            9_600_000_000,
            18_200_000_000,
            limit_fraction=0.5,
            input_size=48_000_000,
            settings="3 layers with --token_vectors",
        )
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for part in ("9.6 GB", "48.0 MB of input", "18.2 GB is available", "50% usable", "9.1 GB"):
        assert part in message, message
    assert "MB per MB of text; 3 layers with --token_vectors" in message
    assert "Flink (./run_pipeline.sh flink" in message and "Dataflow" in message
    assert "split the input into smaller runs of at most about" in message


def test_check_local_run_one_call(tmp_path):
    files = [(str(tmp_path / "a.txt"), 50 * 10**6)]
    settings = dict(token_vectors=True, layers="all", **SMALL)
    expected = estimate_local_peak_bytes(files, **settings)
    assert check_local_run(files, **settings, limit_gb=1000) == expected
    assert check_local_run(files, **settings, limit_gb=0) == expected  # 0: no check
    bound = r"50\.0 MB of input .*3 layers with --token_vectors.*the bound set by --local_memory_limit_gb is 1\.0 GB"
    with pytest.raises(LocalMemoryError, match=bound):
        check_local_run(files, **settings, limit_gb=1)
    with pytest.raises(LocalMemoryError, match="2 worker processes"):
        check_local_run(files, **settings, workers=2, limit_gb=1)


def test_local_workers():
    assert local_workers({"direct_num_workers": 2, "direct_running_mode": "multi_processing"}) == 2
    assert local_workers({"direct_num_workers": 2, "direct_running_mode": "multi_threading"}) == 1
    assert local_workers({"direct_num_workers": 1, "direct_running_mode": "in_memory"}) == 1
    assert local_workers({"direct_num_workers": 0, "direct_running_mode": "multi_processing"}) == (os.cpu_count() or 1)


# The runs of docs/local-memory.md (scripts/measure_local_memory.py, 2026-11-30): input bytes, flags, workers,
# peak MiB. The coefficients must keep reproducing them (a changed coefficient needs new measurements).
MEASURED = [
    (250_524, {}, 1, 1289),
    (501_048, {}, 1, 1587),
    (1_127_358, {}, 1, 2180),
    (501_048, {"token_vectors": True}, 1, 1596),
    (501_048, {"layers": "all"}, 1, 2431),
    (1_127_358, {"layers": "all", "token_vectors": True}, 1, 4743),
    (501_048, {}, 2, 3057),
]


@pytest.mark.parametrize(("n_bytes", "flags", "workers", "peak_mib"), MEASURED)
def test_estimate_reproduces_the_measurements(n_bytes, flags, workers, peak_mib):
    assert estimate(n_bytes, workers=workers, **flags) / 2**20 == pytest.approx(peak_mib, rel=0.05)
