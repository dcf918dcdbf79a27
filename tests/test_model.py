"""The model factory, its losses, the input encoding, the PyDataset and retrieval, on tiny hand-made data."""

import datetime as dt
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from ml.dataset import (
    OOV, ExampleDataset, LossWeights, ModelSpec, chunks_of, encode_items, encode_users, pad_lists, plan_split,
    vocab_index,
)
from ml.retrieval import History, relative_scores, repeat_term, step_positions, top_items
from tests.conftest import REPO

D = dt.date(2026, 11, 14)


def tiny_spec(**overrides) -> ModelSpec:
    values = dict(
        numeric_features=["n_events_30d", "monetary_90d"], log_features=["monetary_90d"],
        categorical_features=["gender"], categorical_vocab={"gender": ["F", "M"]},
        item_vocab=["i1", "i2", "i3", "i4"], category_vocab=["beauty", "pets"], event_type_vocab=["view", "purchase"],
        brand_vocab=["acme"], item_numeric_features=["price"], item_log_features=[], sequence_length=3,
        tags=["beauty", "pets"], segments=["a", "b", "c"],
    )
    values.update(overrides)
    return ModelSpec(**values)


def user_table(**extra) -> pa.Table:
    columns = {
        "user_key": ["u1", "u2"],
        "n_events_30d": [3.0, None],
        "monetary_90d": [math.e - 1, 0.0],
        "gender": ["M", "X"],
        "seq_item_ids": [["i1", "i9", "i2", "i3"], None],
        "seq_categories": [["beauty", "pets", "pets", "beauty"], []],
        "seq_event_types": [["view", "view", "purchase", "view"], []],
        "seq_gaps": [[0, 10, 86_400, 5], []],
    }
    columns.update(extra)
    return pa.table(columns)


# --- encoding -------------------------------------------------------------------------------------

def test_vocab_index_maps_known_values_from_two_and_the_rest_to_oov():
    assert vocab_index(pa.array(["b", None, "z", "a"]), ["a", "b"]).tolist() == [3, OOV, OOV, 2]


def test_pad_lists_keeps_the_newest_values_left_aligned():
    column = pa.array([[1, 2, 3, 4], [], None, [7]], pa.list_(pa.int64()))
    out = pad_lists(column, 3, lambda v: v.to_numpy(zero_copy_only=False) * 10)
    assert out.tolist() == [[20, 30, 40], [0, 0, 0], [0, 0, 0], [70, 0, 0]]


def test_encode_users_by_hand():
    x = encode_users(user_table(), tiny_spec())
    assert x["user_numeric"].ravel().tolist() == pytest.approx([3.0, 1.0, 0.0, 0.0])  # log1p(e - 1) = 1; null -> 0
    assert x["user_categorical"].tolist() == [[3], [OOV]]                         # M is the second value
    assert x["seq_item"].tolist() == [[OOV, 3, 4], [0, 0, 0]]                      # i9 unknown; last three kept
    assert x["seq_category"].tolist() == [[3, 3, 2], [0, 0, 0]]
    assert x["seq_event_type"].tolist() == [[2, 3, 2], [0, 0, 0]]
    assert x["seq_gap"][0].tolist() == pytest.approx([math.log1p(10) / math.log1p(30 * 86_400),
                                                      math.log1p(86_400) / math.log1p(30 * 86_400),
                                                      math.log1p(5) / math.log1p(30 * 86_400)])


def test_encode_users_names_a_missing_feature():
    from jobs.common.errors import InputDataError

    with pytest.raises(InputDataError, match="'monetary_90d'.*retrain"):
        encode_users(user_table().drop(["monetary_90d"]), tiny_spec())


def test_encode_items_gives_new_items_their_own_row_and_the_oov_id():
    items = pa.table({"item_id": ["i2", "new"], "category": ["pets", "beauty"], "brand": ["acme", None],
                      "price": [5.0, 7.0]})
    table = encode_items(items, tiny_spec())
    assert table.rows.tolist() == [3, 6]          # vocabulary has 4 items (+2 reserved): "new" goes past it
    inputs = table.inputs(table.rows)
    assert inputs["item_id"].tolist() == [3, OOV]
    assert inputs["item_category"].tolist() == [3, 2]
    assert inputs["item_brand"].tolist() == [2, OOV]
    assert inputs["item_numeric"].ravel().tolist() == [5.0, 7.0]


# --- the split ------------------------------------------------------------------------------------

def test_plan_split_dates_by_hand():
    plan = plan_split(D, dt.date(2026, 11, 1), horizon_days=3, churn_horizon_days=30, train_dates=3)
    assert (plan.test_as_of, plan.validation_as_of) == (dt.date(2026, 11, 11), dt.date(2026, 11, 8))
    assert plan.train_as_of == (dt.date(2026, 11, 3), dt.date(2026, 11, 4), dt.date(2026, 11, 5))
    assert plan.refit_as_of == tuple(dt.date(2026, 11, d) for d in range(3, 9))
    assert (plan.boundary("train"), plan.boundary("refit"), plan.boundary("test")) == (
        dt.date(2026, 11, 8), dt.date(2026, 11, 11), D)
    # every training label window ends before validation starts; every refit window before test
    assert max(plan.train_as_of) + dt.timedelta(days=3) <= plan.validation_as_of
    assert max(plan.refit_as_of) + dt.timedelta(days=3) <= plan.test_as_of


def test_rolling_folds_never_train_on_their_validation_window():
    from ml.dataset import rolling_folds

    plan = plan_split(D, dt.date(2026, 10, 20), horizon_days=3, churn_horizon_days=30, train_dates=6)
    assert plan.train_as_of[-1] == dt.date(2026, 11, 5)
    folds = rolling_folds(plan, 3)
    assert folds == [
        ((dt.date(2026, 10, 31), dt.date(2026, 11, 1), dt.date(2026, 11, 2)), dt.date(2026, 11, 5)),
        ((dt.date(2026, 10, 31), dt.date(2026, 11, 1)), dt.date(2026, 11, 4)),
        ((dt.date(2026, 10, 31),), dt.date(2026, 11, 3)),
    ]
    assert rolling_folds(plan, 0) == []


def test_plan_split_refuses_a_history_too_short_for_three_windows():
    from jobs.common.errors import InputDataError

    with pytest.raises(InputDataError, match="needs events from 2026-11-05 on .* starts on 2026-11-06"):
        plan_split(D, dt.date(2026, 11, 6), horizon_days=3, churn_horizon_days=30, train_dates=2)


# --- losses and layers ----------------------------------------------------------------------------

def test_in_batch_softmax_loss_by_hand():
    from ml.model import in_batch_softmax_loss

    logits = np.array([[2.0, 0.0], [1.0, 1.0]], dtype="float32")
    loss = np.asarray(in_batch_softmax_loss(None, logits))
    assert loss.tolist() == pytest.approx([-math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2)], rel=1e-5)


def test_in_batch_logits_subtract_log_q_and_mask_duplicate_items_and_copies():
    from ml.model import MASKED_LOGIT, _layers

    layer = _layers()["InBatchLogits"]()
    users = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], dtype="float32")
    items = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 1.0]], dtype="float32")
    log_q = np.array([0.5, 0.0, 0.0, 0.0], dtype="float32")
    ids = np.array([7, 8, 7, 9], dtype="int32")       # rows 0 and 2 share item 7
    groups = np.array([0, 1, 2, 1], dtype="int32")     # rows 1 and 3 are copies of one example
    logits = np.asarray(layer(users, items, log_q, ids, groups))
    assert logits[0].tolist() == pytest.approx([1.5, 0.0, MASKED_LOGIT, 0.0])     # 2 - 0.5 on the diagonal
    assert logits[1].tolist() == pytest.approx([-0.5, 3.0, 1.0, MASKED_LOGIT])
    assert logits[2].tolist() == pytest.approx([MASKED_LOGIT, 3.0, 2.0, 1.0])
    assert logits[3].tolist() == pytest.approx([3.5, MASKED_LOGIT, 2.0, 0.0])


def test_repeat_weights_and_logits_by_hand():
    from ml.model import _layers

    layers = _layers()
    weights_layer = layers["RepeatWeights"]()
    event_types = np.array([[2, 3, 2, 0]], dtype="int32")
    gaps = np.array([[1.0, 0.5, 0.0, 0.0]], dtype="float32")
    ids = np.array([[5, 6, 5, OOV]], dtype="int32")             # the last step is an unknown item
    weights_layer.build(event_types.shape, gaps.shape, ids.shape)
    weights_layer.type_weight.assign(np.eye(64, dtype="float32")[3] * math.log(3.0))   # event type 3 counts 3x
    weights_layer.gap_weight.assign(-1.0)
    weights_layer.scale.assign(2.0)
    weights, scale = (np.asarray(x) for x in weights_layer(event_types, gaps, ids))
    assert weights[0].tolist() == pytest.approx([math.exp(-1), 3 * math.exp(-0.5), 1.0, 0.0], rel=1e-5)
    assert scale.tolist() == [[2.0]]
    # batch items 5, 6, 9 and OOV: 5 was seen twice, 9 never, OOV never matches
    repeat = np.asarray(layers["RepeatLogits"]()(weights, scale, ids, np.array([5, 6, 9, OOV], dtype="int32")))
    assert repeat[0].tolist() == pytest.approx(
        [2 * math.log1p(math.exp(-1) + 1.0), 2 * math.log1p(3 * math.exp(-0.5)), 0.0, 0.0], rel=1e-5)


def test_weighted_binary_crossentropy_by_hand():
    from ml.model import weighted_binary_crossentropy

    loss = weighted_binary_crossentropy(np.array([2.0, 1.0]))
    value = np.asarray(loss(np.array([[1.0, 0.0]]), np.array([[0.8, 0.4]])))
    assert value.tolist() == pytest.approx([(-2 * math.log(0.8) - math.log(0.6)) / 2], rel=1e-5)


def test_model_outputs_and_embedding_shapes():
    from ml.model import ModelParams, build_models

    spec = tiny_spec()
    models = build_models(spec, ModelParams(embedding_dim=8, hidden_units=8, item_embedding_dim=4, gru_units=4))
    out = models.profile.predict_on_batch(encode_users(user_table(), spec))
    assert out["interest_tags"].shape == (2, 2) and out["segment"].shape == (2, 3) and out["churn"].shape == (2, 1)
    assert out["user_embedding"].shape == (2, 9)
    assert out["user_embedding"][:, -1].tolist() == [1.0, 1.0]     # the bias trick's constant
    assert np.allclose(out["segment"].sum(axis=1), 1.0, atol=1e-5)
    items = encode_items(pa.table({"item_id": ["i1"], "category": ["pets"], "brand": ["acme"], "price": [1.0]}), spec)
    assert models.item.predict_on_batch(items.inputs(items.rows)).shape == (1, 9)


# --- the PyDataset --------------------------------------------------------------------------------

def _write_examples(folder, rows: int):
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    table = pa.table({
        "user_key": [f"u{i}" for i in range(rows)],
        "n_events_30d": [float(i) for i in range(rows)],
        "monetary_90d": [0.0] * rows,
        "gender": ["F"] * rows,
        "seq_item_ids": [["i1"]] * rows, "seq_categories": [["pets"]] * rows,
        "seq_event_types": [["view"]] * rows, "seq_gaps": [[0]] * rows,
        "tag_labels": [[1.0, 0.0]] * rows,
        "positives": [["i2", "i3"] if i % 2 == 0 else [] for i in range(rows)],
        "churn_label": [1.0] * rows,
        "churn_until": [D - dt.timedelta(days=1) if i < 3 else D + dt.timedelta(days=1) for i in range(rows)],
        "segment_label": [i % 3 - 1 for i in range(rows)],     # -1 = unknown: weight 0
    })
    pq.write_table(table, folder / "part-0.parquet", row_group_size=4)


def test_dataset_visits_every_row_once_per_epoch_with_masks(tmp_path):
    spec = tiny_spec()
    folder = tmp_path / "examples" / f"as_of_date={D}"
    _write_examples(folder, 10)
    items = {D: encode_items(pa.table({"item_id": ["i1", "i2", "i3", "i4"], "category": ["pets"] * 4,
                                       "brand": ["acme"] * 4, "price": [1.0, 2.0, 3.0, 4.0]}), spec)}
    chunks = chunks_of([str(folder / "part-0.parquet")])
    assert [c.rows for c in chunks] == [4, 4, 2] and chunks[0].as_of == D
    data = ExampleDataset(chunks, spec, items, batch_size=3,
                          weights=LossWeights(np.array([1.0, 2.0, 3.0], np.float32), D),
                          item_log_q=np.log(np.full(6, 1 / 6, np.float32)), seed=1)
    assert len(data) == 4
    for _ in range(2):
        seen = []
        for b in range(len(data)):
            x, y, w = data[b]
            seen += x["user_numeric"][:, 0].astype(int).tolist()
            has_positive = x["user_numeric"][:, 0].astype(int) % 2 == 0
            assert w["retrieval"].tolist() == has_positive.astype(float).tolist()
            assert set(x["item_id"][has_positive].tolist()) <= {3, 4}          # i2 or i3
            assert w["churn"].tolist() == (x["user_numeric"][:, 0] < 3).astype(float).tolist()
            label = (x["user_numeric"][:, 0].astype(int) % 3) - 1
            assert w["segment"].tolist() == [0.0 if s < 0 else [1.0, 2.0, 3.0][s] for s in label]
            assert y["interest_tags"].tolist() == [[1.0, 0.0]] * len(label)
        assert sorted(seen) == list(range(10))
        data.on_epoch_end()
    with pytest.raises(IndexError):
        data[4]


def test_dataset_names_a_corrupt_snapshot_file(tmp_path):
    import pyarrow.parquet as pq

    from jobs.common.errors import InputDataError

    folder = tmp_path / "examples" / f"as_of_date={D}"
    folder.mkdir(parents=True)
    (folder / "part-0.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputDataError, match=r"cannot read training snapshot file .*part-0\.parquet"):
        chunks_of([str(folder / "part-0.parquet")])
    pq.write_table(pa.table({"x": [1]}), tmp_path / "loose.parquet")
    with pytest.raises(InputDataError, match="not inside an as_of_date=YYYY-MM-DD folder"):
        chunks_of([str(tmp_path / "loose.parquet")])


# --- retrieval ------------------------------------------------------------------------------------

def test_top_items_by_hand_with_exclusions_and_ties():
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype="float32")
    items = np.array([[3.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 2.0]], dtype="float32")
    index, scores = top_items(users, items, 3, excluded=[[0], []], block=1)
    assert index.tolist() == [[1, 2, 3], [3, 1, 2]]        # tie between items 1 and 2: lower position first
    assert scores.tolist() == [[1.0, 1.0, 0.0], [2.0, 1.0, 1.0]]
    index, scores = top_items(users[:1], items[:2], 3, excluded=[[0]])
    assert index.tolist() == [[1, -1, -1]] and scores[0, 1] == -np.inf
    assert relative_scores(scores).tolist() == [[1.0, 0.0, 0.0]]


def test_relative_scores_span_each_users_candidates():
    scores = np.array([[4.0, 3.0, 0.0], [2.0, 2.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    assert relative_scores(scores).tolist() == [[1.0, 0.75, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_step_positions_and_the_repeat_term_by_hand():
    # item table rows hold vocabulary indices 4, 2, 7 (a new item would sit past the vocabulary)
    positions = step_positions(np.array([[2, 7, 2, 0], [OOV, 3, 4, 0]]), np.array([4, 2, 7]))
    assert positions.tolist() == [[1, 2, 1, -1], [-1, -1, 0, -1]]      # 3 is not in the table, 0 pads
    weights = np.array([[0.5, 1.0, 1.5, 9.0], [9.0, 9.0, 2.0, 9.0]])
    term = repeat_term(positions, weights, 3, scale=2.0)
    assert term[0].tolist() == pytest.approx([0.0, 2 * math.log(3.0), 2 * math.log(2.0)])
    assert term[1].tolist() == pytest.approx([2 * math.log(3.0), 0.0, 0.0])


def test_top_items_adds_the_repeat_term_before_ranking_and_exclusions_still_win():
    users = np.array([[1.0, 0.0]], dtype="float32")
    items = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]], dtype="float32")
    history = History(np.array([[2, 1, -1]]), np.array([[math.e - 1, 1.0, 5.0]]), 1.0)   # item 2 gains 1, item 1 log 2
    index, scores = top_items(users, items, 3, history=history)
    assert index.tolist() == [[1, 0, 2]]
    assert scores[0].tolist() == pytest.approx([0.5 + math.log(2.0), 1.0, 1.0])
    index, _ = top_items(users, items, 2, excluded=[[1]], history=history)
    assert index.tolist() == [[0, 2]]                 # the tie at 1.0 goes to the lower position


# --- the same model under JAX ---------------------------------------------------------------------

def test_the_model_builds_and_fits_one_step_under_jax():
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import keras
        sys.path.insert(0, sys.argv[1])
        from tests.test_model import tiny_spec, user_table
        from ml.dataset import encode_items, encode_users
        from ml.model import ModelParams, build_models
        spec = tiny_spec()
        models = build_models(spec, ModelParams(embedding_dim=8, hidden_units=8, item_embedding_dim=4, gru_units=4))
        x = encode_users(user_table(), spec)
        items = encode_items(__import__("pyarrow").table({"item_id": ["i1", "i2"], "category": ["pets", "beauty"],
                                                          "brand": ["acme", "acme"], "price": [1.0, 2.0]}), spec)
        x.update(items.inputs(items.rows))
        x["log_q"] = np.zeros(2, "float32")
        x["group"] = np.arange(2, dtype="int32")
        y = {"interest_tags": np.array([[1, 0], [0, 1]], "float32"), "segment": np.array([0, 2], "int32"),
             "churn": np.array([[1.0], [0.0]], "float32"), "retrieval": np.zeros(2, "float32")}
        history = models.train.fit(x, y, batch_size=2, epochs=1, verbose=0).history
        print(json.dumps({"backend": keras.backend.backend(), "loss": history["loss"][0]}))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert math.isfinite(result["loss"]) and result["loss"] > 0


def test_pyfunc_repeat_terms_name_the_items_of_the_sequence():
    from ml.pyfunc import repeat_terms
    from ml.score import Scores

    spec = tiny_spec()
    empty = np.zeros((2, 0), np.float32)
    first, second = spec.item_vocab[0], spec.item_vocab[1]
    scores = Scores(["u1", "u2"], empty, empty, np.zeros(2), empty, "1",
                    seq_items=np.array([[2, 3, 2, 0], [OOV, 0, 0, 0]]),
                    repeat_weights=np.array([[1.0, 0.5, 2.0, 0.0], [4.0, 0.0, 0.0, 0.0]]), repeat_scale=0.5)
    terms = repeat_terms(scores, spec)
    assert terms[0] == pytest.approx({first: 0.5 * math.log(4.0), second: 0.5 * math.log(1.5)})
    assert terms[1] == {}                                     # an item the model never saw
    assert repeat_terms(Scores(["u1"], empty, empty, np.zeros(1), empty, "1"), spec) == [{}]
