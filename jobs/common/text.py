"""Text normalisation inside Spark: invisible characters out, Unicode NFKC (full-width to half-width),
collapsed whitespace, trimmed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

# Spark 4.2 has no normalize(); ICU4J ships with Spark (its collations use it), and its static
# Normalizer.compose(text, compat=true) is NFKC. Spark 4.4 adds F.normalize(col, "NFKC"), which can
# replace this call once the project moves up.
_NORMALIZER = "com.ibm.icu.text.Normalizer"
_NON_ASCII = r"[^\x00-\x7F]"
# Terminal escape sequences (ANSI CSI `ESC[31m`, OSC `ESC]...BEL`, two-character `ESC c`), removed whole.
_ANSI_ESCAPE = r"\x1B(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1B]*(?:\x07|\x1B\\)|[@-Z\\-_])"
# Characters that render as nothing or reorder what is shown: C0/C1 controls (tab, line ends aside: they
# are whitespace), soft hyphen, zero-width spaces and joiners, direction marks, bidi embeddings, overrides
# and isolates, word joiner and invisible operators, the byte-order mark. A joiner inside an emoji
# sequence goes too (the emoji stay, side by side).
_INVISIBLE = (r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\x{00AD}\x{061C}\x{180E}\x{200B}-\x{200F}"
              r"\x{202A}-\x{202E}\x{2060}-\x{2064}\x{2066}-\x{2069}\x{FEFF}]")


def nfkc(column: "Column") -> "Column":
    """NFKC of a string column: `ｒｕｎｎｉｎｇ　ｓｈｏｅｓ` -> `running shoes`, `①` -> `1`.

    ASCII text is already in NFKC, so only strings with other characters pay for the call.
    """
    from pyspark.sql import functions as F

    compose = F.reflect(F.lit(_NORMALIZER), F.lit("compose"), column, F.lit(True))
    return F.when(column.rlike(_NON_ASCII), compose).otherwise(column)


def strip_invisible(column: "Column") -> "Column":
    """The text without terminal escape sequences and invisible or direction-changing characters
    (zero-width, bidi overrides, NUL and other controls): what a reader of silver sees is what is there."""
    from pyspark.sql import functions as F

    return F.regexp_replace(F.regexp_replace(column, _ANSI_ESCAPE, ""), _INVISIBLE, "")


def normalise_text(column: "Column") -> "Column":
    """Invisible characters out, NFKC, then every run of whitespace as one space, trimmed; an empty result is null."""
    from pyspark.sql import functions as F

    text = F.trim(F.regexp_replace(nfkc(strip_invisible(column)), r"\s+", " "))
    return F.when(text == F.lit(""), F.lit(None)).otherwise(text)
