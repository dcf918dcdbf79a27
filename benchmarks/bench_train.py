"""Training and scoring throughput of the profile model on CPU.

For each user count: a synthetic snapshot (ml/synthetic.py, one as-of date, the real Parquet layout)
is streamed through the real input pipeline (ml.dataset.ExampleDataset) into the real model
(ml.model.build_models) for a fixed number of steps; the figures are training examples per second
(after the first, compiling, steps) and the process's peak resident memory. Each size runs in its
own process, so peaks do not carry over. Then batch scoring: the trained model is saved as the
registered pyfunc would be, and Spark scores a synthetic user table with `mapInArrow`
(jobs/score.py's distributed path: the neighbour term's item similarity computed by Spark, then
the model loaded once per partition, top-N candidates included); the figure is users scored per
second, the similarity included (and also timed on its own).

    .venv/bin/python benchmarks/bench_train.py --users 100000 1000000 --steps 60 --score-users 200000 --out bench_train.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_once(users: int, items: int, steps: int, batch_size: int, warmup: int, workdir: Path) -> dict:
    """Write the snapshot, then time `steps` training steps of the real model on it."""
    import keras
    import numpy as np

    from jobs.common.config import load_config
    from ml.dataset import ExampleDataset, LossWeights, build_spec, chunks_of, label_stats, load_items
    from ml.model import ModelParams, build_models
    from ml.synthetic import synthetic_snapshot

    started = time.perf_counter()
    day = dt.date(2026, 11, 5)
    snapshot = synthetic_snapshot(workdir / "snapshot", users=users, items=items, dates=[day], sequence_length=50)
    write_s = time.perf_counter() - started
    os.environ["PORTRAIT__MODEL__SEQUENCE_LENGTH"] = "50"
    cfg = load_config()
    plan = snapshot.plan
    from dataclasses import replace

    plan = replace(plan, train_as_of=(day,))
    files = snapshot.files([day])
    spec = build_spec(cfg, files, snapshot.files([day], "items"), plan, tags=snapshot.tags)
    item_tables = load_items({day: snapshot.files([day], "items")}, spec)
    chunks = chunks_of(files)
    stats = label_stats(chunks, spec, day)
    spec.item_log_q = stats.item_log_q.tolist()
    params = ModelParams.from_config(cfg)
    keras.utils.set_random_seed(7)
    from ml.dataset import read_table, user_numeric

    sample = user_numeric(read_table(files, max_rows=20_000), spec)
    item_sample = item_tables[day].numeric[item_tables[day].rows]
    models = build_models(spec, params, sample, item_sample, stats.tag_pos_weight())
    data = ExampleDataset(chunks, spec, item_tables, batch_size, LossWeights(stats.segment_weights(), day),
                          stats.item_log_q, positives_per_row=1)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    timer = Timer()
    models.train.fit(data, epochs=1, steps_per_epoch=min(steps + warmup, len(data)), callbacks=[timer], verbose=0)
    timed = timer.times[warmup:]
    seconds = timed[-1] - timer.times[warmup - 1] if len(timed) > 0 else float("nan")
    examples = len(timed) * batch_size
    return {
        "users": users, "items": items, "batch_size": batch_size, "timed_steps": len(timed),
        "examples_per_s": round(examples / seconds, 1) if seconds > 0 else None,
        "snapshot_write_s": round(write_s, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
        "snapshot_rows": sum(c.rows for c in chunks), "row_groups": len(chunks),
        "model_dir": str(workdir / "model"), "_models": models, "_spec": spec, "_snapshot": snapshot, "_day": day,
    }


def score_with_spark(result: dict, score_users: int, workdir: Path, neighbour_scale: float) -> dict:
    """Save the trained towers as the pyfunc, then score `score_users` rows through mapInArrow, with
    the neighbour term's similarity computed by Spark first when `neighbour_scale` > 0."""
    import mlflow.pyfunc
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.common.config import load_config
    from jobs.common.spark import build_spark
    from jobs.score import SCORED_SCHEMA, _partition_scorer
    from ml.pyfunc import PortraitProfileModel, save_artifacts
    from ml.score import load_scorer

    snapshot, day = result["_snapshot"], result["_day"]
    result["_spec"].neighbour_scale = neighbour_scale
    items_table = pq.read_table(snapshot.files([day], "items")[0])
    artifacts = save_artifacts(result["_models"], result["_spec"], workdir / "artifacts", items_table)
    model_path = workdir / "pyfunc"
    mlflow.pyfunc.save_model(str(model_path), python_model=PortraitProfileModel(), artifacts=artifacts,
                             pip_requirements=["keras"])
    scorer = load_scorer(str(model_path))
    item_table, vectors = scorer.items(items_table)
    import numpy as np

    categories = np.asarray([str(c) for c in items_table.column("category").to_pylist()], dtype=object)

    cfg = load_config()
    spark = build_spark(cfg, app_suffix="bench-train")
    users = spark.read.parquet(snapshot.example_dir(day)).select(*[c for c in result["_spec"].user_columns()])
    users = users.limit(score_users).repartition(int(spark.conf.get("spark.sql.shuffle.partitions"))).cache()
    count = users.count()
    started = time.perf_counter()
    neighbours = scorer.spark_neighbours(users, item_table)
    neighbour_s = time.perf_counter() - started
    fn = _partition_scorer(str(model_path), "bench", item_table, categories, vectors, 100, 4096, neighbours)
    users.mapInArrow(fn, SCORED_SCHEMA).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    spark.stop()
    return {"score_users": count, "score_s": round(seconds, 1), "users_per_s": round(count / seconds, 1),
            "neighbours_s": round(neighbour_s, 1),
            "neighbour_pairs": int(neighbours.nnz) if neighbours is not None else 0}


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        result = train_once(args.one_size, args.items, args.steps, args.batch_size, args.warmup, Path(folder))
        if args.score_users:
            result.update(score_with_spark(result, args.score_users, Path(folder), args.neighbour_scale))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("_") and k != "model_dir"}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (tracing, compiling)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--score-users", type=int, default=100_000,
                        help="users scored through Spark mapInArrow after the first size (0: skip)")
    parser.add_argument("--neighbour-scale", type=float, default=64.0,
                        help="the neighbour term's scale while scoring (0: without it, as older models)")
    parser.add_argument("--workdir", default=None, help="where snapshots are written (a temporary folder)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_size:
        child(args)
        return
    rows = []
    for n, users in enumerate(args.users):
        command = [sys.executable, __file__, "--one-size", str(users), "--items", str(args.items),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                   "--score-users", str(args.score_users if n == 0 else 0),
                   "--neighbour-scale", str(args.neighbour_scale)]
        if args.workdir:
            command += ["--workdir", args.workdir]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"bench_train: the {users:,}-user run failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'users':>10} {'examples/s':>11} {'peak RSS MiB':>13} {'snapshot s':>11} {'scored users/s':>15} "
          f"{'neighbours s':>13}")
    for row in rows:
        scored = f"{row['users_per_s']:,.0f}" if "users_per_s" in row else "-"
        print(f"{row['users']:>10,} {row['examples_per_s'] or 0:>11,.0f} {row['peak_rss_mib']:>13,.0f} "
              f"{row['snapshot_write_s']:>11} {scored:>15} {row.get('neighbours_s', '-'):>13}")
    if args.out:
        Path(args.out).write_text(json.dumps({"bench": "train", "results": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
