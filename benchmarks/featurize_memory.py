"""Peak memory of featurize_files on a Speech Commands sized corpus.

    python benchmarks/featurize_memory.py [--clips 65000] [--keep-mel 12000] [--workers N]

Writes --clips generated 1 s, 16 kHz, 16-bit WAVs (~32 KB each, ~2 GB for 65,000)
to a temporary folder, featurizes them keeping the mel rows of --keep-mel of them
(as the featurize step does for the unlabelled split), and reports the peak
resident memory of this process plus its worker processes, sampled every 20 ms
from /proc (Linux). The folder is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurize_throughput import write_synthetic_wavs  # noqa: E402  (sibling script)

from spatial_ae.data.features import featurize_files  # noqa: E402


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid: int) -> list[int]:
    """Process ids of all children, grandchildren... of pid (scans /proc/*/stat)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


class PeakMemory(threading.Thread):
    """Samples the summed RSS of this process and its descendants until stopped."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self.peak_parent, self.running = interval, 0, 0, True

    def run(self) -> None:
        me = os.getpid()
        last_scan, children = 0.0, []
        while self.running:
            if time.monotonic() - last_scan > 0.5:  # worker processes change rarely
                children, last_scan = descendants(me), time.monotonic()
            parent = rss_bytes(me)
            self.peak_parent = max(self.peak_parent, parent)
            self.peak = max(self.peak, parent + sum(rss_bytes(child) for child in children))
            time.sleep(self.interval)

    def stop(self) -> None:
        self.running = False
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=65000)
    parser.add_argument("--keep-mel", type=int, default=12000, help="clips whose mel rows are kept")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spatial_ae_memory_") as folder:
        start = time.perf_counter()
        paths = write_synthetic_wavs(Path(folder), args.clips)
        print(f"generated {len(paths)} WAVs in {time.perf_counter() - start:.0f} s")
        keep_mel = np.zeros(len(paths), dtype=bool)
        keep_mel[np.random.default_rng(1).choice(len(paths), args.keep_mel, replace=False)] = True
        baseline = rss_bytes(os.getpid())
        monitor = PeakMemory()
        monitor.start()
        start = time.perf_counter()
        table = featurize_files(paths, workers=args.workers, keep_mel=keep_mel, progress=False)
        seconds = time.perf_counter() - start
        monitor.stop()
    output_mb = (table.mfcc.nbytes + table.mel.nbytes) / 2 ** 20
    print(f"featurized {int(table.ok.sum())}/{len(paths)} clips in {seconds:.0f} s "
          f"({len(paths) / seconds:.0f} clips/s, {os.cpu_count()} CPUs, workers={args.workers or 'default'})")
    print(f"output arrays: {output_mb:.0f} MB (mfcc {table.mfcc.shape}, mel {table.mel.shape})")
    print(f"peak RSS: {monitor.peak / 2 ** 20:.0f} MB in all (parent {monitor.peak_parent / 2 ** 20:.0f} MB, "
          f"{baseline / 2 ** 20:.0f} MB before the call; the rest in workers)")


if __name__ == "__main__":
    main()
