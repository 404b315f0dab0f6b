"""The linear baseline every finetune is measured against, fitted on the same training split with its
regularisation chosen on the validation split:

- single label: TF-IDF (word 1-2 grams) + logistic regression;
- multi-label: the same features, one logistic regression per label (one-vs-rest), a label predicted at
  probability 0.5;
- regression: the same features + ridge regression;
- pairs: the features of each text and their element-wise product (words the two texts share), so that
  a linear model can compare them a little.

It answers the first question a user has after pretraining on their own text: did it help? A finetuned
encoder that does not beat a linear model on word counts has not earned its compute. It costs seconds
(sparse features), not minutes, on tens of thousands of examples.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from bertlab.model.classification_head import MULTI_LABEL, REGRESSION, SINGLE_LABEL

C_GRID = (1.0, 4.0, 16.0)  # inverse regularisation strengths tried; the best on val is kept
ALPHA_GRID = (0.3, 1.0, 3.0)  # ridge strengths tried
MODELS = {
    SINGLE_LABEL: "tfidf_1-2gram_logistic_regression",
    MULTI_LABEL: "tfidf_1-2gram_one_vs_rest_logistic_regression",
    REGRESSION: "tfidf_1-2gram_ridge",
}


def features(train: Sequence[Any], others: Sequence[Sequence[Any]]) -> list[Any]:
    """TF-IDF matrices of `train` and each of `others` (lists of examples with .text, .text_pair); for
    pairs [a, b, a * b], one vocabulary fitted on both texts of the training pairs."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    pairs = bool(train) and train[0].text_pair is not None
    if not pairs:
        matrices = [vectorizer.fit_transform([e.text for e in train])]
        return matrices + [vectorizer.transform([e.text for e in split]) for split in others]
    vectorizer.fit([text for e in train for text in (e.text, e.text_pair)])

    def encode(split: Sequence[Any]) -> Any:
        first = vectorizer.transform([e.text for e in split])
        second = vectorizer.transform([e.text_pair for e in split])
        return hstack([first, second, first.multiply(second)]).tocsr()

    return [encode(train)] + [encode(split) for split in others]


def _choose(fit: Callable[[float], Any], score: Callable[[Any], float], grid: Sequence[float]) -> tuple:
    """(validation score, setting, model) of the setting of `grid` whose model scores best."""
    best = None
    for setting in grid:
        model = fit(setting)
        value = score(model)
        if best is None or value > best[0]:
            best = (value, setting, model)
    return best


def linear_baseline(
    train: Sequence[Any],
    val: Sequence[Any],
    test: Sequence[Any],
    labels: Sequence[object],
    problem_type: str = SINGLE_LABEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on `train`, choose the regularisation on `val`, score `test` with the figures a finetune of
    `problem_type` reports (the same names: test/accuracy, test/micro_f1, test/spearman, ...)."""
    from sklearn.exceptions import ConvergenceWarning

    started = time.perf_counter()
    x_train, x_val, x_test = features(train, [val, test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # saga at a loose tolerance: enough here
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant prediction's undefined correlation
        fit = {SINGLE_LABEL: _single_label, MULTI_LABEL: _multi_label, REGRESSION: _regression}[problem_type]
        results = fit(x_train, x_val, x_test, train, val, test, labels, seed)
    model = MODELS[problem_type]
    if train and train[0].text_pair is not None:
        model = model.replace("tfidf_1-2gram", "tfidf_1-2gram_of_each_text_and_their_product")
    return {"model": model, **results, "seconds": round(time.perf_counter() - started, 2)}


def _single_label(x_train, x_val, x_test, train, val, test, labels, seed) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    names = [str(label) for label in labels]
    gold = {
        name: [str(e.label) for e in split]
        for name, split in (("train", train), ("val", val), ("test", test))
    }

    def fit(c: float) -> Any:
        return LogisticRegression(C=c, solver="saga", max_iter=200, tol=1e-3, random_state=seed).fit(
            x_train, gold["train"]
        )

    val_accuracy, c, model = _choose(fit, lambda m: accuracy_score(gold["val"], m.predict(x_val)), C_GRID)
    predicted = model.predict(x_test)
    return {
        "test/accuracy": float(accuracy_score(gold["test"], predicted)),
        "test/macro_f1": float(
            f1_score(gold["test"], predicted, labels=names, average="macro", zero_division=0)
        ),
        "val/accuracy": float(val_accuracy),
        "C": c,
    }


def _multi_label(x_train, x_val, x_test, train, val, test, labels, seed) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=[str(label) for label in labels])
    gold = {
        name: binarizer.fit_transform([[str(label) for label in e.label] for e in split])
        for name, split in (("train", train), ("val", val), ("test", test))
    }

    def fit(c: float) -> Any:
        # liblinear: each label's binary problem on sparse features, fast; a label every training
        # record has (or none has) is left to OneVsRest's constant predictor
        logistic = LogisticRegression(C=c, solver="liblinear", random_state=seed)
        return OneVsRestClassifier(logistic).fit(x_train, gold["train"])

    def micro(model: Any, x: Any, y: Any) -> float:
        return float(f1_score(y, model.predict(x), average="micro", zero_division=0))

    val_micro, c, model = _choose(fit, lambda m: micro(m, x_val, gold["val"]), C_GRID)
    predicted = model.predict(x_test)
    return {
        "test/micro_f1": micro(model, x_test, gold["test"]),
        "test/macro_f1": float(f1_score(gold["test"], predicted, average="macro", zero_division=0)),
        "test/exact_match": float(accuracy_score(gold["test"], predicted)),
        "val/micro_f1": val_micro,
        "C": c,
    }


def _regression(x_train, x_val, x_test, train, val, test, labels, seed) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    gold = {
        name: np.array([float(e.label) for e in split])
        for name, split in (("train", train), ("val", val), ("test", test))
    }

    def fit(alpha: float) -> Any:
        return Ridge(alpha=alpha, random_state=seed).fit(x_train, gold["train"])

    def spearman(y: Any, predicted: Any) -> float:
        value = spearmanr(y, predicted).statistic
        return float(value) if np.isfinite(value) else 0.0

    val_spearman, alpha, model = _choose(fit, lambda m: spearman(gold["val"], m.predict(x_val)), ALPHA_GRID)
    predicted, y = model.predict(x_test), gold["test"]
    pearson = pearsonr(y, predicted).statistic if len(y) > 1 else float("nan")
    return {
        "test/rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "test/mae": float(mean_absolute_error(y, predicted)),
        "test/pearson": float(pearson),
        "test/spearman": spearman(y, predicted),
        "test/r2": float(r2_score(y, predicted)),
        "val/spearman": val_spearman,
        "alpha": alpha,
    }
