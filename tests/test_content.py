"""Content features: sentiment (snownlp / vaderSentiment), keywords (jieba / English), search intent."""

import pytest

from jobs.common.taxonomy import CATEGORIES, TOP_LEVEL
from jobs.content import (
    annotate_pandas, has_cjk, intent_dictionary, normalise, search_intent, sentiment, sentiment_label, tokenize,
)


@pytest.mark.parametrize("text, label, low, high", [
    ("质量很好，非常满意", "positive", 0.85, 0.90),           # snownlp: 0.872
    ("性价比很高，推荐购买", "positive", 0.98, 1.00),          # 0.990
    ("质量太差了，用了两天就坏了", "negative", 0.0, 0.01),     # 0.002
    ("和描述不符，很失望", "negative", 0.09, 0.11),            # 0.100
    ("Great quality, very happy with it.", "positive", 0.92, 0.93),   # vader compound 0.8439
    ("Terrible quality, broke after two days.", "negative", 0.14, 0.15),  # -0.7096
    ("About what I expected.", "neutral", 0.5, 0.5),        # compound 0.0
])
def test_sentiment_labels_and_ranges(text, label, low, high):
    score = sentiment(text)
    assert low <= score <= high
    assert sentiment_label(score) == label


def test_sentiment_picks_the_library_by_script():
    # A Chinese sentence goes to snownlp even with Latin letters in it; English words alone go to vader.
    assert has_cjk("iPhone 很好用") and not has_cjk("iPhone works great")
    from snownlp import SnowNLP
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    assert sentiment("iPhone 很好用") == pytest.approx(SnowNLP("iPhone 很好用").sentiments)
    compound = SentimentIntensityAnalyzer().polarity_scores("iPhone works great")["compound"]
    assert sentiment("iPhone works great") == pytest.approx((compound + 1) / 2)
    assert sentiment("VERY GOOD!!!") > sentiment("very good")  # case and "!" stay for vader
    assert (sentiment(None), sentiment("   "), sentiment_label(None)) == (None, None, None)


def test_jieba_words_of_a_fixed_sentence():
    assert tokenize("物流很快，包装完好，好评") == ["物流", "很快", "包装", "完好", "好评"]
    # Full-width letters are folded by NFKC; single characters and stopwords (了, 很, 非常) are dropped.
    assert tokenize("Ｓｏｎｙ 无线降噪耳机 非常好用了") == ["sony", "无线", "降噪", "耳机", "好用"]


def test_english_words_drop_stopwords_numbers_and_punctuation():
    assert tokenize("Bought it again, still EXCELLENT!! 2 times.") == ["bought", "still", "excellent", "times"]
    assert tokenize("noise-cancelling headphones don't disappoint") == ["noise-cancelling", "headphones", "disappoint"]
    assert (tokenize(None), tokenize(""), tokenize("!!!")) == ([], [], [])


@pytest.mark.parametrize("query, category", [
    ("蓝牙耳机 便宜", "electronics"),
    ("笔记本电脑 特价", "computers"),      # the longer phrase beats 笔记本 (office notebooks)
    ("笔记本", "office_stationery"),
    ("running shoe sale", "shoes_bags"),   # singular finds 'running shoes'
    ("Automatic Watches", "jewelry_watches"),
    ("smart watch", "electronics"),
    ("ＬＥＧＯ 积木", "toys_games"),           # full-width, brand and subcategory agree
    ("猫粮 进口", "pets"),
])
def test_search_intent_maps_queries_onto_the_taxonomy(query, category):
    assert search_intent(query) == category


def test_search_intent_without_a_match_or_with_an_ambiguous_brand():
    assert search_intent("something completely different") is None
    assert search_intent("") is None and search_intent(None) is None
    # IKEA sells both furniture and home goods, so the brand alone says nothing.
    assert "ikea" not in intent_dictionary()
    assert search_intent("ikea") is None


def test_every_generated_query_finds_its_category():
    """The generator's searches are a category's keywords plus a price word; all must map back."""
    misses = [(c.id, k) for c in CATEGORIES.values() for k in (*c.keywords_zh, *c.keywords_en)
              for suffix in ("", " 便宜", " sale", " premium") if search_intent(k + suffix) != c.id]
    assert misses == []
    assert set(intent_dictionary().values()) == set(TOP_LEVEL)


def test_search_intent_over_a_shops_own_categories():
    """taxonomy none: level names point at their tag-level category; a name two tags claim says nothing."""
    from jobs.content import IntentMatcher, shop_intent_dictionary

    dictionary = shop_intent_dictionary(
        ["drama|thriller", "electronics>audio>headphones", "electronics>video>tv", "(no genres listed)"],
        {"films>noir": "drama", "(no genres listed)": "unknown"}, tag_level=2)
    assert dictionary == {"drama": "drama", "thriller": "thriller", "audio": "electronics>audio",
                          "headphones": "electronics>audio", "video": "electronics>video",
                          "tv": "electronics>video", "noir": "drama"}
    intent = IntentMatcher(dictionary).intent
    assert (intent("Sony headphones"), intent("best Thrillers"), intent("noir classics")) == (
        "electronics>audio", "thriller", "drama")
    assert intent("electronics") is None and intent("口红") is None  # ambiguous; the builtin words are not used
    assert annotate_pandas(pd_frame(["cheap tv"]), intent=intent)["intent"].tolist() == ["electronics>video"]


def pd_frame(queries):
    import pandas as pd

    return pd.DataFrame({"query": queries, "review_text": [None] * len(queries)})


def test_annotate_pandas_fills_each_kind_of_row():
    import pandas as pd

    frame = pd.DataFrame({"query": ["口红 便宜", None, None], "review_text": [None, "Great quality, very happy with it.", None]})
    out = annotate_pandas(frame)
    assert out["intent"].tolist() == ["beauty", None, None]
    assert out["sentiment"].iloc[0] is None or pd.isna(out["sentiment"].iloc[0])
    assert out["sentiment"].iloc[1] == pytest.approx(sentiment("Great quality, very happy with it."))
    assert out["tokens"].tolist() == [["口红", "便宜"], ["great", "quality", "happy"], []]
    assert normalise("  Ａ  b\tC ") == "a b c"


@pytest.mark.spark
def test_annotate_content_in_spark(spark):
    from jobs.content import annotate_content

    events = spark.createDataFrame(
        [("e1", "search", "蓝牙耳机", None), ("e2", "review", None, "质量太差了，用了两天就坏了"), ("e3", "view", None, None)],
        "event_id string, event_type string, query string, review_text string")
    rows = {r["event_id"]: r for r in annotate_content(events).collect()}
    assert (rows["e1"]["intent"], rows["e1"]["tokens"], rows["e1"]["sentiment"]) == ("electronics", ["蓝牙", "耳机"], None)
    assert rows["e2"]["sentiment"] == pytest.approx(sentiment("质量太差了，用了两天就坏了"))
    assert sentiment_label(rows["e2"]["sentiment"]) == "negative"
    assert (rows["e3"]["intent"], rows["e3"]["tokens"]) == (None, [])


def test_long_text_is_scored_in_pieces_cut_at_spaces():
    from jobs.content import sentiment_chunks

    assert sentiment_chunks("aa bb cc dd", 5) == ["aa bb", "cc dd"]
    assert sentiment_chunks("aaaaaaa bb", 5) == ["aaaaa", "aa bb"]  # a word longer than a piece is cut
    assert sentiment_chunks("质量很好但是电池不行", 4) == ["质量很好", "但是电池", "不行"]
    assert sentiment_chunks("short", 5) == ["short"]


def test_a_long_review_is_the_length_weighted_mean_of_its_pieces_and_a_short_one_is_unchanged():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from jobs.content import SENTIMENT_CHUNK_CHARS, sentiment, sentiment_chunks

    vader = SentimentIntensityAnalyzer()

    def whole(text):
        return (vader.polarity_scores(text)["compound"] + 1) / 2

    short = "Great sound, but the battery died after a week!!"
    assert sentiment(short) == pytest.approx(whole(short), abs=1e-12)
    text = " ".join(["I love this phone, the screen is great."] * 30 + ["Terrible battery, awful support."] * 30)
    pieces = sentiment_chunks(text, SENTIMENT_CHUNK_CHARS["en"])
    assert len(pieces) == 3 and all(len(p) <= 1000 for p in pieces)
    expected = sum(len(p) * whole(p) for p in pieces) / sum(len(p) for p in pieces)
    assert sentiment(text) == pytest.approx(expected, abs=1e-12)


def test_review_sentiment_time_grows_with_the_length_not_its_square():
    import random
    import time

    from jobs.content import sentiment

    rng = random.Random(7)
    words = "great product but the battery is bad awful love hate fine screen sound price cheap".split()
    text = " ".join(rng.choice(words) for _ in range(24_000))  # ~128k characters: 65 s when scored whole
    started = time.monotonic()
    score = sentiment(text)
    assert 0 <= score <= 1 and time.monotonic() - started < 15


def test_clean_masks_of_personal_data_are_no_keywords():
    assert tokenize("great phone, call [phone] or mail [email], [name] says") == ["great", "phone", "call", "mail", "says"]
    assert tokenize("好评 [name] [phone]") == ["好评"]
