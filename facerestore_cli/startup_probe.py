"""`facerestore run` (sys.argv) that prints the time its first face enters the network: what `facerestore bench`
runs in a fresh process to time start-up (benchmark.startup_seconds)."""

from __future__ import annotations

import sys
import time

def main() -> None:
    from facerestore_cli import cli, pipeline
    from facerestore_cli.benchmark import STARTUP_MARK

    original = pipeline.Pipeline.restore_batch

    def first(self, batch):
        print(f"{STARTUP_MARK} {time.time()}", file=sys.stderr, flush=True)
        pipeline.Pipeline.restore_batch = original
        return original(self, batch)

    pipeline.Pipeline.restore_batch = first
    cli.main(sys.argv[1:])
