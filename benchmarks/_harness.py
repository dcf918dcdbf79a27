"""What the Spark benchmarks share: a child process's environment, its sampled memory, and the loop
over data sizes in scratch folders. Imported by the scripts beside it (run as benchmarks/bench_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable


def child_environment(workdir: Path, lake: str = "lakehouse") -> dict[str, str]:
    """This environment with the landing zone, lakehouse and ground truth under `workdir`."""
    env = dict(os.environ)
    env.update({
        "PORTRAIT__LANDING_ZONE": str(workdir / "landing"),
        "PORTRAIT__LAKEHOUSE_ROOT": str(workdir / lake),
        "PORTRAIT__GROUND_TRUTH_DIR": str(workdir / "ground_truth"),
        "PORTRAIT_HMAC_KEY": env.get("PORTRAIT_HMAC_KEY", "bench-key-0123456789abcdef"),
    })
    return env


def tree_rss(process) -> int:
    """Resident memory of a psutil process and all its children, in bytes."""
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_sampled(command: list[str], env: dict[str, str], failure: str) -> tuple[Any, list[tuple[float, int]]]:
    """Run `command`; its last stdout line as JSON, and (time.monotonic(), tree RSS) samples every 0.2 s.

    CLOCK_MONOTONIC is the child's clock too, so a child can say when its steps began and ended.
    A non-zero exit stops the benchmark with `failure`, the exit code and the end of stderr."""
    import psutil

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(process.pid)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append((time.monotonic(), tree_rss(handle)))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{failure} (exit {process.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), samples


def peak_mib(samples: list[tuple[float, int]], began: float = float("-inf"), ended: float = float("inf")) -> int:
    """The largest sample between `began` and `ended`, in MiB (0 without one)."""
    return round(max((rss for t, rss in samples if began <= t <= ended), default=0) / 2**20)


def each_size(sizes: str, workdir: str | None, prefix: str,
              bench: Callable[[int, Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """bench(size, folder) for each of the comma-separated `sizes`, each in a fresh folder removed after it
    (under `workdir`, or a temporary one removed at the end); each row is printed as JSON when done."""
    rows = []
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix))
    try:
        for size in (int(s) for s in sizes.split(",")):
            folder = root / f"events_{size}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            try:
                rows.append(bench(size, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def write_figures(path: str | None, rows: list[dict[str, Any]]) -> None:
    """The rows as JSON with the machine's CPU count, when a path is given."""
    if path:
        Path(path).write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "rows": rows}, indent=2) + "\n")
