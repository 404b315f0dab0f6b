"""The linear baseline every finetune is measured against: TF-IDF (word 1-2 grams) + logistic regression
on the same training split, C chosen on the validation split.

It answers the first question a user has after pretraining on their own text: did it help? A finetuned
encoder that does not beat a linear model on word counts has not earned its compute. It costs seconds
(the saga solver on sparse features), not minutes, on tens of thousands of examples.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

C_GRID = (1.0, 4.0, 16.0)  # inverse regularisation strengths tried; the best on val is kept


def linear_baseline(
    train: Sequence[tuple[str, object]],
    val: Sequence[tuple[str, object]],
    test: Sequence[tuple[str, object]],
    labels: Sequence[object],
    seed: int = 0,
) -> dict[str, float]:
    """Fit on `train`, pick C on `val`, score `test`: accuracy and macro-F1 over `labels` (all classes)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    names = [str(label) for label in labels]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    features = {
        "train": vectorizer.fit_transform([text for text, _ in train]),
        "val": vectorizer.transform([text for text, _ in val]),
        "test": vectorizer.transform([text for text, _ in test]),
    }
    gold = {
        split: [str(label) for _, label in examples]
        for split, examples in (("train", train), ("val", val), ("test", test))
    }
    best = None
    for c in C_GRID:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # saga at a loose tolerance: enough here
            model = LogisticRegression(C=c, solver="saga", max_iter=200, tol=1e-3, random_state=seed)
            model.fit(features["train"], gold["train"])
        val_accuracy = accuracy_score(gold["val"], model.predict(features["val"]))
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, c, model)
    val_accuracy, c, model = best
    predicted = model.predict(features["test"])
    return {
        "test/accuracy": float(accuracy_score(gold["test"], predicted)),
        "test/macro_f1": float(
            f1_score(gold["test"], predicted, labels=names, average="macro", zero_division=0)
        ),
        "val/accuracy": float(val_accuracy),
        "C": c,
        "seconds": round(time.perf_counter() - started, 2),
    }
