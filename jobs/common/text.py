"""Text normalisation inside Spark: Unicode NFKC (full-width to half-width), collapsed whitespace, trimmed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

# Spark 4.2 has no normalize(); ICU4J ships with Spark (its collations use it), and its static
# Normalizer.compose(text, compat=true) is NFKC. Spark 4.4 adds F.normalize(col, "NFKC"), which can
# replace this call once the project moves up.
_NORMALIZER = "com.ibm.icu.text.Normalizer"
_NON_ASCII = r"[^\x00-\x7F]"


def nfkc(column: "Column") -> "Column":
    """NFKC of a string column: `ｒｕｎｎｉｎｇ　ｓｈｏｅｓ` -> `running shoes`, `①` -> `1`.

    ASCII text is already in NFKC, so only strings with other characters pay for the call.
    """
    from pyspark.sql import functions as F

    compose = F.reflect(F.lit(_NORMALIZER), F.lit("compose"), column, F.lit(True))
    return F.when(column.rlike(_NON_ASCII), compose).otherwise(column)


def normalise_text(column: "Column") -> "Column":
    """NFKC, then every run of whitespace as one space, trimmed; an empty result is null."""
    from pyspark.sql import functions as F

    text = F.trim(F.regexp_replace(nfkc(column), r"\s+", " "))
    return F.when(text == F.lit(""), F.lit(None)).otherwise(text)
