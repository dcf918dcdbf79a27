"""Where training runs: CPU, one GPU, or several. The same code path everywhere; only detection switches.

`model.device` is auto (use GPUs when the backend sees any), cpu (ignore GPUs) or gpu (fail when
there is none). With GPUs, training uses mixed precision (float16 compute, float32 heads and loss
scaling) and, with more than one, a data-parallel strategy: tf.distribute.MirroredStrategy on the
TensorFlow backend, keras.distribution.DataParallel on JAX. In the cluster profile the train task
runs on the Airflow `gpu` queue and pool (docs/model.md).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from jobs.common.config import Config
from jobs.common.errors import ConfigError, EnvironmentSetupError

DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class DevicePlan:
    backend: str
    gpus: int
    mixed_precision: bool

    @property
    def kind(self) -> str:
        return "gpu" if self.gpus else "cpu"

    def describe(self) -> str:
        if not self.gpus:
            return f"cpu ({self.backend})"
        return f"{self.gpus} gpu(s) ({self.backend}, mixed precision {'on' if self.mixed_precision else 'off'})"

    def scope(self):
        """The context to build and compile the model in: a strategy scope with several GPUs."""
        if self.gpus > 1 and self.backend == "tensorflow":
            import tensorflow as tf

            return tf.distribute.MirroredStrategy().scope()
        if self.gpus > 1 and self.backend == "jax":
            import keras

            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext()

    def apply_precision(self) -> None:
        import keras

        keras.mixed_precision.set_dtype_policy("mixed_float16" if self.mixed_precision else "float32")


def visible_gpus(backend: str) -> int:
    """GPUs the Keras backend can use."""
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def detect(cfg: Config) -> DevicePlan:
    choice = str(cfg.get("model.device", "auto")).lower()
    if choice not in DEVICE_CHOICES:
        raise ConfigError(f"model.device is '{choice}'; use one of {', '.join(DEVICE_CHOICES)}")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    gpus = 0 if choice == "cpu" else visible_gpus(backend)
    if choice == "gpu" and gpus == 0:
        raise EnvironmentSetupError(
            f"model.device is gpu but the {backend} backend sees no GPU; install the GPU build or set model.device: auto")
    mixed = bool(cfg.get("model.mixed_precision", True)) and gpus > 0
    return DevicePlan(backend=backend, gpus=gpus, mixed_precision=mixed)
