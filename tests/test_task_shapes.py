"""The task shapes users bring beside one text -> one label: text pairs, multi-label tags and regression
scores, each through the whole path (finetune, results, predictions, predict, export to Hugging Face and
ONNX, exact resume) on the embedded sets of each shape; and each bad input as one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bertlab.baseline import linear_baseline
from bertlab.data.labelled import Example, RecordFields, read_labelled_file
from bertlab.errors import BertlabError
from bertlab.predict import predict
from bertlab.run import run
from bertlab.tasks.objectives import MultilabelThresholdSweep
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import compose_config, launch, read_csv
from tests.test_resume import interrupt_at

SHAPES = {
    "pairs": ["data=reviews_pairs", "architecture.type_vocab_size=2"],
    "tags": ["data=reviews_tags", "classification_head.problem_type=multi_label_classification"],
    "sizes": ["data=reviews_sizes", "classification_head.problem_type=regression"],
}
TINY = [
    "+experiment=finetune",
    "pretrained_experiment=none",
    "training.max_steps=40",
    "training.max_epochs=null",
    "training.min_steps=null",
    "training.val_check_interval=20",
    "training.checkpoint.every_n_steps=10",
    "training.batch_size=16",
    "training.precision=32-true",
    "data.source.count=360",
    "tokenizer.max_length=64",
    "tokenizer.vocab_size=300",
    "logging.log_every_n_steps=1",
]


def finetune(output_dir, name: str, shape: str, *overrides: str):
    cfg = compose_config([*TINY, *SHAPES[shape], f"experiment.name={name}", *overrides], output_dir)
    run_dir = output_dir / "finetuning" / name
    run(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def shape_runs(tmp_path_factory) -> dict:
    """One finished tiny finetune per shape."""
    output_dir = tmp_path_factory.mktemp("shapes")
    return {shape: finetune(output_dir, shape, shape) for shape in SHAPES}


def test_each_shape_reports_its_own_figures_beside_its_baseline(shape_runs):
    expected = {
        "pairs": ("single_label_classification", {"test/accuracy", "test/macro_f1"}),
        "tags": ("multi_label_classification", {"test/micro_f1", "test/macro_f1", "test/exact_match"}),
        "sizes": ("regression", {"test/rmse", "test/mae", "test/pearson", "test/spearman", "test/r2"}),
    }
    for shape, run_dir in shape_runs.items():
        problem_type, figures = expected[shape]
        results = json.loads((run_dir / "results.json").read_text())
        assert results["problem_type"] == problem_type
        assert figures <= set(results) and figures <= set(results["baseline"]), shape
        info = json.loads((run_dir / "run.json").read_text())
        assert info["problem_type"] == problem_type and info["text_pairs"] == (shape == "pairs")
        losses = [float(row["loss"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), shape  # it learns


def test_regression_learns_on_standardised_targets_and_reports_the_targets_units(shape_runs):
    run_dir = shape_runs["sizes"]
    results = json.loads((run_dir / "results.json").read_text())
    scale = results["target_scale"]
    assert 3 < scale["mean"] < 6 and 1.5 < scale["std"] < 3.5  # animal sizes 1-10
    assert results["test/spearman"] > 0.5, results  # the size follows from the animal's name
    rows = read_csv(run_dir / "predictions.csv")
    assert list(rows[0]) == ["id", "label", "prediction"]
    gold = np.array([float(r["label"]) for r in rows])
    predicted = np.array([float(r["prediction"]) for r in rows])
    assert math.sqrt(np.mean((gold - predicted) ** 2)) == pytest.approx(results["test/rmse"], rel=1e-4)
    evaluation = read_csv(run_dir / "metrics/eval/metrics.csv")
    assert {"rmse", "mae", "pearson", "spearman", "r2"} <= set(evaluation[0])
    assert json.loads((run_dir / "labels.json").read_text()) == ["label"]
    assert torch.load(run_dir / "checkpoints/best-model.ckpt", weights_only=True)["state_dict"][
        "head.target_mean"
    ].item() == pytest.approx(scale["mean"])


def test_multi_label_chooses_its_threshold_on_validation_and_predicts_label_lists(shape_runs):
    run_dir = shape_runs["tags"]
    results = json.loads((run_dir / "results.json").read_text())
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels == ["bear", "fox", "frog", "mouse", "owl", "wolf"]
    threshold = results["threshold"]
    state = torch.load(run_dir / "checkpoints/best-model.ckpt", weights_only=True)["state_dict"]
    assert state["head.threshold"].item() == pytest.approx(threshold)
    validations = [r for r in read_csv(run_dir / "metrics/eval/metrics.csv") if r["stage"] == "val"]
    assert {"micro_f1", "macro_f1", "exact_match", "threshold"} <= set(validations[0])
    rows = read_csv(run_dir / "predictions.csv")
    for row in rows:  # the prediction lists the labels at or above the recorded threshold
        chosen = [label for label in labels if float(row[f"p_{label}"]) >= threshold]
        assert row["prediction"] == ",".join(chosen)
        assert row["label"] and set(row["label"].split(",")) <= set(labels)


def test_pairs_get_the_pair_template_and_their_segments(shape_runs):
    from bertlab.saved_run import SavedRun

    run_dir = shape_runs["pairs"]
    saved = SavedRun.open(run_dir, "best")
    tokenizer = saved.tokenizer()
    ids, starts = tokenizer.encode_pairs(["a fox", "the owl"], ["a bear in the woods", "x"])
    sep = tokenizer.sep_id
    for row, start in zip(ids, starts, strict=True):
        assert row[0] == tokenizer.cls_id and row[-1] == sep and row[start - 1] == sep
        assert row.count(sep) == 2
    assert saved.architecture["type_vocab_size"] == 2
    assert "backbone.token_type_embeddings.weight" in saved.state_dict


def test_pairs_are_cut_longest_first_as_hugging_face_truncates(shape_runs):
    from bertlab.saved_run import SavedRun

    tokenizer = SavedRun.open(shape_runs["pairs"], "best").tokenizer()
    tokenizer.max_length = 12
    long, short = "fox " * 30, "owl bear"
    ids, starts = tokenizer.encode_pairs([long, short], [short, long])
    assert [len(row) for row in ids] == [12, 12]
    assert ids[0][starts[0] :] == tokenizer.encode_sequences([short])[0][1:]  # the short text kept whole
    assert starts[1] == 1 + 2 + 1  # [CLS] owl bear [SEP]
    tokenizer.truncation = False
    with pytest.raises(BertlabError, match="1 text pairs exceed max_length=12"):
        tokenizer.encode_pairs([long], [short])


def jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.mark.parametrize("shape", list(SHAPES))
def test_predict_gives_the_test_predictions_of_the_run(shape_runs, shape, tmp_path):
    """bertlab-predict on the test split's texts equals predictions.csv (pairs read from two fields)."""
    from hydra.utils import instantiate

    from bertlab.saved_run import SavedRun

    run_dir = shape_runs[shape]
    config = SavedRun.open(run_dir, "best").config
    problem_type = config["classification_head"]["problem_type"]
    datamodule = instantiate(config["data"], batch_size=8, num_workers=0, problem_type=problem_type)
    examples = datamodule.examples()["test"]
    records = [{"text": e.text, **({"text_pair": e.text_pair} if e.text_pair else {})} for e in examples]
    out = tmp_path / "out.jsonl"
    predict(run_dir, [jsonl(tmp_path / "in.jsonl", records)], out, progress=False)
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    expected = read_csv(run_dir / "predictions.csv")
    assert len(predicted) == len(expected)
    for mine, theirs in zip(predicted, expected, strict=True):
        if shape == "sizes":
            assert mine["value"] == pytest.approx(float(theirs["prediction"]), abs=1e-4)
            continue
        probabilities = {k: v for k, v in mine.items() if k.startswith("p_")}
        assert probabilities == pytest.approx({k: float(theirs[k]) for k in probabilities}, abs=1e-4)
        if shape == "tags":
            assert ",".join(mine["labels"]) == theirs["prediction"]


def test_predict_refuses_pairs_in_text_files_and_reads_them_from_csv(shape_runs, tmp_path):
    run_dir = shape_runs["pairs"]
    text = tmp_path / "a.txt"
    text.write_text("one text\n")
    with pytest.raises(BertlabError, match=r"reads text pairs .* not \.txt"):
        predict(run_dir, [text], tmp_path / "x.csv", progress=False)
    table = tmp_path / "pairs.csv"
    table.write_text("a,b\nthe fox is red,the trip was great\nthe owl,\n")
    summary = predict(
        run_dir, [table], tmp_path / "p.csv", text_field="a", text_pair_field="b", progress=False
    )
    assert summary.written == 1 and summary.bad.total() == 1  # the row without a second text is skipped


@pytest.mark.parametrize("shape", list(SHAPES))
def test_export_to_hugging_face_and_onnx_gives_bertlabs_outputs(shape_runs, shape, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from bertlab.export import export_hf, export_onnx
    from bertlab.trained_model import load_trained_model

    run_dir = shape_runs[shape]
    export_hf(run_dir, tmp_path / "hf")
    export_onnx(run_dir, tmp_path / "onnx")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    problem_type = {"pairs": "single_label_classification", "tags": "multi_label_classification"}
    assert model.config.problem_type == problem_type.get(shape, "regression")
    first = ["the fox is red and eats berries .", "the trip was awful . anna saw the owl ."]
    second = ["the trip was great .", "it was not dull at all ."]
    batch = tokenizer(first, second if shape == "pairs" else None, padding=True, return_tensors="pt")
    if shape == "pairs":
        assert batch["token_type_ids"].sum() > 0
    with torch.no_grad():
        theirs = model(**batch).logits
    trained = load_trained_model(run_dir)
    with torch.no_grad():
        types = batch["token_type_ids"] if shape == "pairs" else None
        hidden = trained.backbone(batch["input_ids"], batch["attention_mask"], token_type_ids=types)
        ours = trained.head(hidden, batch["attention_mask"])
        if shape == "sizes":  # Hugging Face's regression logit is the value in the target's units
            ours = trained.head.predict(ours)[:, None]
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs, ours)
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    assert ("token_type_ids" in feeds) == (shape == "pairs")
    assert np.allclose(session.run(None, feeds)[0], ours.numpy(), atol=1e-4)
    if shape == "tags":
        assert (
            model.config.multi_label_threshold
            == json.loads((run_dir / "results.json").read_text())["threshold"]
        )


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_resumes_to_the_bit(tmp_path, monkeypatch, shape):
    straight = finetune(tmp_path, "straight", shape, "training.max_steps=16", "training.val_check_interval=8")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 6)
        with pytest.raises(TrainingInterrupted):
            finetune(tmp_path, "cut", shape, "training.max_steps=16", "training.val_check_interval=8")
    cut = finetune(
        tmp_path,
        "cut",
        shape,
        "training.max_steps=16",
        "training.val_check_interval=8",
        "training.resume.is_resume=true",
    )

    def weights(run_dir):
        return torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["state_dict"]

    a, b = weights(straight), weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [r for r in read_csv(straight / "metrics/train/metrics.csv")]
    assert rows == read_csv(cut / "metrics/train/metrics.csv")


# -- bad input: one line naming the file, its line and the key, before anything is written ----------------
def fields(**settings) -> RecordFields:
    return RecordFields(**settings)


@pytest.mark.parametrize(
    ("records", "settings", "message"),
    [
        (
            [{"text": "a", "label": ["x", "y"]}],
            {},
            r"data.label_field: .*:1 has \['x', 'y'\] in 'label' where one label is expected; for several "
            r"labels per text set classification_head.problem_type=multi_label_classification",
        ),
        (
            [{"text": "a", "label": "big"}],
            {"problem_type": "regression"},
            r"data.label_field: .*:1 has 'big' in 'label' where a finite number is expected",
        ),
        (
            [{"text": "a", "label": ["x"]}, {"text": "b", "label": []}],
            {"problem_type": "multi_label_classification"},
            r"data.label_field: .*:2 has an empty label list in 'label'",
        ),
        (
            [{"text": "a", "label": "x"}],
            {"problem_type": "multi_label_classification"},
            r"data.label_field: .*:1 has 'x' in 'label' where a list of labels is expected .* \['x'\]",
        ),
        (
            [{"text": "a", "label": "x"}],
            {"text_pair_field": "text_pair"},
            r"data.text_pair_field: .*:1 has no 'text_pair' field; set data.text_pair_field to the field",
        ),
    ],
)
def test_a_label_of_the_wrong_shape_names_the_file_line_and_key(tmp_path, records, settings, message):
    path = jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(BertlabError, match=message):
        read_labelled_file(path, fields(**settings), "train")


def test_tables_split_label_lists_and_parse_numbers(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nfirst\tb; a ;\nsecond\tc\n")
    multi = read_labelled_file(
        path, fields(problem_type="multi_label_classification", label_separator=";"), "x"
    )
    assert [e.label for e in multi] == [("a", "b"), ("c",)]
    path.write_text("text\tlabel\nfirst\t2.5\nsecond\t-1e3\n")
    values = read_labelled_file(path, fields(problem_type="regression"), "x")
    assert [e.label for e in values] == [2.5, -1000.0]
    path.write_text("text\tlabel\nfirst\tnan\n")
    with pytest.raises(BertlabError, match="'nan' in 'label' where a finite number is expected"):
        read_labelled_file(path, fields(problem_type="regression"), "x")


def test_a_bad_label_stops_the_launch_with_one_line_and_writes_nothing(tmp_path):
    train = jsonl(
        tmp_path / "train.jsonl", [{"text": f"t{i}", "label": "x" if i else "3.5"} for i in range(40)]
    )
    result = launch(
        [
            "+experiment=finetune",
            "experiment.name=refused",
            "pretrained_experiment=none",
            "data=classification",
            f"data.source.train={train}",
            "classification_head.problem_type=regression",
        ],
        tmp_path / "runs",
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: data.label_field: {train}:2 has 'x' in 'label' where a finite number is expected "
        f"(classification_head.problem_type=regression); fix the record, or set "
        f"classification_head.problem_type to a classification type"
    ]
    assert not (tmp_path / "runs" / "finetuning" / "refused").exists()


def test_the_problem_type_and_the_monitor_are_checked_at_launch(tmp_path):
    cfg = compose_config(["+experiment=finetune", "classification_head.problem_type=regression"], tmp_path)
    assert cfg.training.checkpoint.monitor == "val/spearman"
    cfg = compose_config(
        ["+experiment=finetune", "classification_head.problem_type=multi_label_classification"], tmp_path
    )
    assert cfg.training.checkpoint.monitor == "val/micro_f1"
    result = launch(
        ["+experiment=finetune", "pretrained_experiment=none", "classification_head.problem_type=ordinal"],
        tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "classification_head.problem_type: unknown problem type 'ordinal'" in result.stderr
    for overrides, message in (
        (
            ["classification_head.problem_type=regression", "training.checkpoint.monitor=val/accuracy"],
            "training.checkpoint.monitor: must be one of ['val/rmse', 'val/mae', 'val/pearson', 'val/spearman', "
            "'val/r2', 'val/loss'], got 'val/accuracy'",
        ),
        (
            ["classification_head.problem_type=regression", "training.checkpoint.monitor=val/rmse"],
            "training.checkpoint.mode: is 'max' but val/rmse is better when lower; set training.checkpoint.mode=min",
        ),
    ):
        cfg = compose_config(["+experiment=finetune", "pretrained_experiment=none", *overrides], tmp_path)
        with pytest.raises(BertlabError) as refused:
            run(cfg, tmp_path / "finetuning" / "x")
        assert str(refused.value) == message
        assert not (tmp_path / "finetuning" / "x").exists()


def test_the_embedded_set_names_the_problem_type_it_needs(tmp_path):
    cfg = compose_config([*TINY, "data=reviews_tags", "experiment.name=x"], tmp_path)
    with pytest.raises(
        BertlabError, match=r"set classification_head\.problem_type=multi_label_classification"
    ):
        run(cfg, tmp_path / "finetuning" / "x")


# -- the parts -----------------------------------------------------------------------------------------
def test_the_threshold_sweep_counts_as_scikit_learn_does():
    from sklearn.metrics import accuracy_score, f1_score

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(50, 5, generator=generator)
    targets = torch.rand(50, 5, generator=generator) < 0.4
    targets[:, 4] = False  # a label never present
    sweep = MultilabelThresholdSweep(5)
    sweep.update(probabilities[:20], targets[:20])
    sweep.update(probabilities[20:], targets[20:])
    figures = sweep.compute()
    for index, threshold in enumerate(sweep.thresholds):
        predicted = (probabilities >= threshold).numpy()
        gold = targets.numpy()
        assert figures["micro_f1"][index] == pytest.approx(
            f1_score(gold, predicted, average="micro", zero_division=0)
        )
        assert figures["macro_f1"][index] == pytest.approx(
            f1_score(gold, predicted, average="macro", zero_division=0)
        )
        assert figures["exact_match"][index] == pytest.approx(accuracy_score(gold, predicted))


def test_the_pair_baseline_compares_the_two_texts():
    """Is the second word the first one? No word alone says it; the product features (words both texts
    have) do, which a bag of words of each text cannot."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]

    def example():
        first = rng.choice(words)
        same = rng.random() < 0.5
        second = first if same else rng.choice([w for w in words if w != first])
        return Example(first, "shared" if same else "apart", second)

    train, val, test = ([example() for _ in range(n)] for n in (1500, 300, 300))
    results = linear_baseline(train, val, test, ["apart", "shared"], "single_label_classification")
    assert results["test/accuracy"] > 0.95, results
    assert results["model"] == "tfidf_1-2gram_of_each_text_and_their_product_logistic_regression"


def test_runs_saved_before_the_problem_type_existed_still_resume():
    from bertlab.training.resume import config_changes

    saved = {"classification_head": {"pooling": "cls"}, "data": {"text_field": "text"}, "architecture": {}}
    current = {
        "classification_head": {"pooling": "cls", "problem_type": "single_label_classification"},
        "data": {"text_field": "text", "label_separator": ",", "text_pair_field": None},
        "architecture": {"type_vocab_size": 0},
    }
    assert config_changes(saved, current) == []
    current["classification_head"]["problem_type"] = "regression"
    assert config_changes(saved, current) == [("classification_head.problem_type", None, "regression")]


def test_pairs_from_an_imported_bert_equal_bert_for_sequence_classification(tmp_path):
    """A Hugging Face BERT keeps its segment embeddings: the pair template's ids and types and the logits of
    a classifier on pairs equal BertForSequenceClassification's, with padding."""
    transformers = pytest.importorskip("transformers")
    from bertlab.hf_import import load_weights, read_hf_model
    from bertlab.model.classification_head import ClassificationHead
    from bertlab.model.encoder import Encoder
    from tests.test_hf_import import save_model

    folder = save_model(tmp_path / "bert", "bert")
    model = read_hf_model(folder)
    assert model.architecture["type_vocab_size"] == 2
    tokenizer = model.tokenizer
    backbone = Encoder(
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_id,
        **{k: v for k, v in model.architecture.items() if k != "_target_"},
    ).eval()
    load_weights(backbone, None, model.state_dict(), folder)
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    hidden = backbone.hidden_size
    head = ClassificationHead(hidden, 3, dropout=0.0, hidden_layer_size=hidden).eval()
    with torch.no_grad():
        head.classifier[0].weight.copy_(hf.bert.pooler.dense.weight)
        head.classifier[0].bias.copy_(hf.bert.pooler.dense.bias)
        head.classifier[3].weight.copy_(hf.classifier.weight)
        head.classifier[3].bias.copy_(hf.classifier.bias)
    first = ["the quick brown fox jumps over the lazy dog", "a short one", "Numbers like 1234, too!"]
    second = ["a short one", "the lazy dog sleeps in the sun all day long", "too"]
    reference = transformers.AutoTokenizer.from_pretrained(folder)(
        first, second, padding=True, return_tensors="pt"
    )
    ids, starts = tokenizer.encode_pairs(first, second)
    mask = reference["attention_mask"]
    assert ids == [
        row[: int(length)].tolist() for row, length in zip(reference["input_ids"], mask.sum(1), strict=True)
    ]
    types = (torch.arange(mask.size(1))[None, :] >= torch.tensor(starts)[:, None]).long() * mask
    assert torch.equal(types, reference["token_type_ids"])
    with torch.no_grad():
        theirs = hf(**reference).logits
        ours = head(backbone(reference["input_ids"], mask, token_type_ids=types), mask)
        without_segments = head(backbone(reference["input_ids"], mask), mask)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert not torch.allclose(without_segments, theirs, atol=1e-3)  # the segments matter


def test_ddp_multi_label_chooses_one_threshold_from_every_process_share(tmp_path):
    """Two processes: the threshold sweep's counts are summed across them, so the test figures are those of
    the whole gathered predictions.csv at the one recorded threshold."""
    from sklearn.metrics import f1_score

    args = [a for a in TINY if not a.startswith(("training.precision", "training.max_steps"))]
    args += [*SHAPES["tags"], "training.max_steps=20", "experiment.name=ddp_tags", "data.source.count=301"]
    launch([*args, "training.accelerator=cpu", "training.devices=2", "training.strategy=ddp"], tmp_path)
    run_dir = tmp_path / "finetuning" / "ddp_tags"
    results = json.loads((run_dir / "results.json").read_text())
    labels = json.loads((run_dir / "labels.json").read_text())
    rows = read_csv(run_dir / "predictions.csv")
    assert [int(r["id"]) for r in rows] == list(range(len(rows)))
    gold = [[label in r["label"].split(",") for label in labels] for r in rows]
    predicted = [[float(r[f"p_{label}"]) >= results["threshold"] for label in labels] for r in rows]
    assert results["test/micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro"), abs=1e-6)


@pytest.mark.parametrize("shape", ["tags", "sizes"])
def test_evaluate_scores_a_new_file_of_the_runs_shape(shape_runs, shape, tmp_path):
    from bertlab.data.embedded_corpus import generate_labelled
    from bertlab.evaluate import evaluate

    records = [{"text": text, "label": label} for text, label in generate_labelled(shape, 40, seed=9)]
    folder = evaluate(shape_runs[shape], jsonl(tmp_path / "new.jsonl", records), None, None, "best")
    results = json.loads((folder / "results.json").read_text())
    main = {"tags": "test/micro_f1", "sizes": "test/spearman"}[shape]
    assert main in results and results["data"] == str(tmp_path / "new.jsonl")
    assert len(read_csv(folder / "predictions.csv")) == 40


@pytest.mark.parametrize("shape", ["tags", "sizes"])
def test_each_shape_trains_under_bf16_autocast_whatever_the_cpu(tmp_path, shape):
    """precision=auto picks bf16-mixed on CPUs with native bf16 and on most GPUs: forced here."""
    run_dir = finetune(tmp_path, "bf16", shape, "training.precision=bf16-mixed", "training.max_steps=8")
    results = json.loads((run_dir / "results.json").read_text())
    figures = [value for key, value in results.items() if key.startswith("test/")]
    assert figures and all(math.isfinite(value) for value in figures), results
    rows = read_csv(run_dir / "predictions.csv")
    assert rows
    for row in rows:  # the values (regression) or the per-label probabilities (multi-label) are numbers
        scores = (
            [row["prediction"]] if shape == "sizes" else [v for k, v in row.items() if k.startswith("p_")]
        )
        assert scores and all(math.isfinite(float(score)) for score in scores), row
