"""Delta Lake jars: Maven coordinates matching the installed pyspark and delta-spark, fetched once."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError

SCALA_BINARY = "2.13"


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def delta_jar_version(cfg: Config) -> str:
    """The jar version: config may pin a patch release, never another major.minor than the pip package."""
    installed = importlib.metadata.version("delta-spark")
    pinned = str(cfg.get("spark.delta_jar_version", "") or installed)
    if _major_minor(pinned) != _major_minor(installed):
        raise EnvironmentSetupError(
            f"spark.delta_jar_version {pinned} does not match the installed delta-spark {installed}; "
            f"use a {_major_minor(installed)}.x jar version in conf/{cfg.profile}.yaml"
        )
    return pinned


def delta_coordinates(cfg: Config) -> list[str]:
    """Since Delta 4.1 the Spark artifact carries the Spark major.minor in its name."""
    import pyspark

    version = delta_jar_version(cfg)
    spark_mm = _major_minor(pyspark.__version__)
    return [
        f"io.delta:delta-spark_{spark_mm}_{SCALA_BINARY}:{version}",
        f"io.delta:delta-storage:{version}",
    ]


def _jar_name(coordinate: str) -> str:
    _, artifact, version = coordinate.split(":")
    return f"{artifact}-{version}.jar"


def jars_dir(cfg: Config) -> Path:
    return Path(cfg.location("spark.jars_dir"))


def cached_jars(cfg: Config) -> list[Path] | None:
    """The jar files when all of them are in the cache, else None."""
    folder = jars_dir(cfg)
    paths = [folder / _jar_name(c) for c in delta_coordinates(cfg)]
    return paths if all(p.is_file() and p.stat().st_size > 0 for p in paths) else None


def fetch_jars(cfg: Config) -> list[Path]:
    """Copy the Delta jars into the cache with Maven, which uses this machine's repository set-up.

    Only delta-spark and delta-storage are needed at run time; everything else they declare is
    either provided by Spark or used by features (Unity Catalog, Kernel) Portrait does not touch.
    """
    found = cached_jars(cfg)
    if found:
        return found
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EnvironmentSetupError(
            "Delta jars are not cached in "
            f"{jars_dir(cfg)} and Maven (mvn) is not installed to fetch them; "
            "install Maven (apt-get install maven) and run `make jars`"
        )
    folder = jars_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    for coordinate in delta_coordinates(cfg):
        done = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}",
             f"-DoutputDirectory={folder}", "-Dmdep.overWriteIfNewer=true"],
            capture_output=True, text=True, cwd=folder,
        )
        if done.returncode != 0:
            tail = " ".join((done.stdout + done.stderr).split()[-40:])
            raise EnvironmentSetupError(f"mvn could not fetch {coordinate}: {tail}")
    found = cached_jars(cfg)
    if not found:
        raise EnvironmentSetupError(f"mvn ran but the Delta jars are not in {folder}")
    return found


def main() -> None:
    from jobs.common.config import load_config

    for path in fetch_jars(load_config()):
        print(path)


if __name__ == "__main__":
    main()
