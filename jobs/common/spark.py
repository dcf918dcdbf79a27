"""The one SparkSession factory: Delta extensions, cached Delta jars, settings from the profile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

from jobs.common.config import Config
from jobs.common.errors import EnvironmentSetupError
from jobs.common.jars import fetch_jars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MIN_JAVA = 17


def java_major_version() -> int | None:
    """Major version of the java that Spark will start, or None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    done = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> int:
    major = java_major_version()
    if major is None:
        raise EnvironmentSetupError(
            "no Java found: Spark 4.2 needs Java 17 or 21; install it "
            "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    if major < MIN_JAVA:
        raise EnvironmentSetupError(
            f"Java {major} found but Spark 4.2 needs Java 17 or 21; install OpenJDK 17 and set JAVA_HOME"
        )
    return major


def build_spark(cfg: Config, app_suffix: str = "") -> "SparkSession":
    """Create (or return the running) session. Local and spark:// or k8s:// masters share this path."""
    check_java()
    jars = fetch_jars(cfg)

    from pyspark.sql import SparkSession

    # Python workers (pandas UDFs such as jobs.rerank) must run this interpreter, not whatever python3
    # is first on PATH; SparkContext reads the variable when it starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    name = str(cfg.get("spark.app_name", "portrait")) + (f"-{app_suffix}" if app_suffix else "")
    builder = (
        SparkSession.builder.master(str(cfg.get("spark.master")))
        .appName(name)
        .config("spark.jars", ",".join(str(p) for p in jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    )
    for key, value in (cfg.get("spark.conf", {}) or {}).items():
        builder = builder.config(str(key), str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(str(cfg.get("spark.log_level", "WARN")))
    return spark
