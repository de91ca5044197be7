"""The SDK workers our pool starts carry two data-plane settings (pipeline/worker_pool.py): 1 MB data messages, and
send queues that may grow (Beam's Java runner reads a bundle's outputs only once the bundle is done)."""

from __future__ import annotations

import subprocess
import sys

from pipeline.worker_pool import _HARNESS, SDK_DATA_MESSAGE_BYTES, SDK_SEND_QUEUE_BYTES


def test_a_pool_worker_sends_1_mb_messages_and_queues_what_a_partition_outputs():
    """The harness command up to the harness start, run in a fresh interpreter: the data-plane module's settings are
    those of the pool, and the queues a data channel makes take them (Beam's defaults: 10 MB messages, 100 MB)."""
    prefix = _HARNESS.split("from apache_beam.runners.worker.sdk_worker", 1)[0].format(
        limit=SDK_DATA_MESSAGE_BYTES, send_queue=SDK_SEND_QUEUE_BYTES
    )
    probe = (
        "channel = dp._GrpcDataChannel(); "
        "stream = dp.SizeBasedBufferingClosableOutputStream(); "
        "print(channel._to_send.max_bytes, channel._pending_send.max_bytes, stream._size_flush_threshold)"
    )
    done = subprocess.run([sys.executable, "-c", prefix + probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    to_send, pending, flush = map(int, done.stdout.split())
    assert to_send == pending == SDK_SEND_QUEUE_BYTES >= 8 << 30
    assert flush == SDK_DATA_MESSAGE_BYTES == 1 << 20
