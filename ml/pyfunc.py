"""The registered model: an MLflow pyfunc around the Keras user and item towers and their ModelSpec.

`predict` takes gold rows (user features + sequence arrays, a pandas DataFrame) and returns one row
per user: tag scores, the segment, churn risk, the embedding and the repeat term of the items in the
user's own sequence, so any MLflow consumer can score without this project's Spark code (an item's
score is user_embedding . item_embedding plus its repeat term, 0 for items not listed). The
neighbour term is not in it: it needs the similarity of the whole day's sequences, not one batch's;
ml.neighbours computes it and the spec's `neighbour_scale` weighs it. Loading needs the `portrait`
package importable (ml.model holds the custom layers), as it is in the project's images.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow.pyfunc

PROFILE_FILE = "profile.keras"
ITEM_FILE = "item_tower.keras"
SPEC_FILE = "spec.json"
ITEMS_FILE = "items.parquet"      # the item features of the test date, the default item table


class PortraitProfileModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras

        from ml.dataset import ModelSpec
        from ml.model import custom_objects

        objects = custom_objects()
        self.profile = keras.saving.load_model(context.artifacts["profile"], custom_objects=objects, compile=False)
        self.item = keras.saving.load_model(context.artifacts["item_tower"], custom_objects=objects, compile=False)
        self.spec = ModelSpec.from_json(Path(context.artifacts["spec"]).read_text(encoding="utf-8"))
        self.items = None
        if "items" in context.artifacts:
            import pyarrow.parquet as pq

            from ml.dataset import encode_items

            self.items = encode_items(pq.read_table(context.artifacts["items"]), self.spec)

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import pyarrow as pa

        from ml.score import Scorer

        table = pa.Table.from_pandas(model_input, preserve_index=False)
        # Sequence steps read item numbers from the item table saved with the model (jobs/score.py
        # passes the day's own table instead).
        scores = Scorer(self.profile, self.item, self.spec).score(table, getattr(self, "items", None))
        return pd.DataFrame({
            "interest_tags": [list(map(float, row)) for row in scores.tag_scores],
            "segment": [self.spec.segments[i] for i in scores.segment_probs.argmax(axis=1)] if len(scores.segment_probs) else [],
            "churn_risk": scores.churn.astype(float),
            "user_embedding": [list(map(float, row)) for row in scores.embeddings],
            "repeat_terms": repeat_terms(scores, self.spec),
        })


def repeat_terms(scores, spec) -> list[dict[str, float]]:
    """Per user, item id -> a * log(1 + the sum of the user's step weights on it), for the items the model
    knows in the user's sequence; empty dicts for a model without the repeat term."""
    import numpy as np

    from ml.dataset import OOV

    if scores.repeat_weights is None:
        return [{} for _ in scores.user_keys]
    out = []
    for items, weights in zip(scores.seq_items, scores.repeat_weights):
        totals: dict[str, float] = {}
        for index, weight in zip(items, weights):
            if index > OOV:
                item = spec.item_vocab[int(index) - OOV - 1]
                totals[item] = totals.get(item, 0.0) + float(weight)
        out.append({item: float(scores.repeat_scale * np.log1p(total)) for item, total in totals.items()})
    return out


def save_artifacts(models, spec, folder: Path, items=None) -> dict[str, str]:
    """Write the towers, the spec and (optionally) an item-feature table into `folder`; returns the
    artifacts mapping for log_model."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"profile": folder / PROFILE_FILE, "item_tower": folder / ITEM_FILE, "spec": folder / SPEC_FILE}
    models.profile.save(paths["profile"])
    models.item.save(paths["item_tower"])
    paths["spec"].write_text(spec.to_json(), encoding="utf-8")
    if items is not None:
        import pyarrow.parquet as pq

        paths["items"] = folder / ITEMS_FILE
        pq.write_table(items, paths["items"])
    return {k: str(v) for k, v in paths.items()}
