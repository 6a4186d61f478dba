"""FineTunedClassifier: fine-tune the embedder on labelled texts, then fit a head (SetFit)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from ._fine_tuning import SentenceFineTuner
from ._inputs import TextInputMixin

__all__ = ["FineTunedClassifier"]


class FineTunedClassifier(TextInputMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a sentence embedder on labelled texts, then fit a classifier on its embeddings.

    The two steps of SetFit, as one scikit-learn classifier: a clone of
    ``fine_tuner`` is fitted on the texts and their labels (pairs drawn from
    the labels, see :class:`~skembed.SentenceFineTuner`), then a clone of
    ``head`` on the fine-tuned embeddings of the same texts. Its
    hyperparameters are nested parameters, so ``GridSearchCV`` can search
    ``fine_tuner__learning_rate`` next to ``head__C``. ``score`` is
    scikit-learn's mean accuracy, as for any classifier.

    Parameters
    ----------
    fine_tuner : SentenceFineTuner, default=None
        The embedder to fine-tune; ``None`` means ``SentenceFineTuner()``.
    head : classifier, default=None
        A scikit-learn classifier fitted on the embeddings; ``None`` means
        ``LogisticRegression()``.

    Attributes
    ----------
    fine_tuner_ : SentenceFineTuner
        The fitted fine-tuner.
    head_ : classifier
        The fitted head.
    classes_ : ndarray
        The class labels.

    See Also
    --------
    skembed.SentenceFineTuner : The fine-tuning step alone, a transformer.

    Examples
    --------
    >>> from skembed import FineTunedClassifier, SentenceFineTuner
    >>> texts = ["great film", "loved it", "awful", "boring plot"]
    >>> clf = FineTunedClassifier(SentenceFineTuner(device="cpu", epochs=2))
    >>> clf.fit(texts, ["pos", "pos", "neg", "neg"]).predict(["what a film"])  # doctest: +SKIP
    array(['pos'], dtype='<U3')
    """

    _parameter_constraints: ClassVar[dict] = {
        "fine_tuner": [SentenceFineTuner, None],
        "head": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(
        self, fine_tuner: SentenceFineTuner | None = None, head: Any | None = None
    ) -> None:
        self.fine_tuner = fine_tuner
        self.head = head

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Fine-tune the embedder on the labelled texts, then fit the head.

        Parameters
        ----------
        X : texts
            One column of texts.
        y : array-like of shape (n,)
            A label per text; at least two labels.

        Returns
        -------
        self : FineTunedClassifier
        """
        fine_tuner = SentenceFineTuner() if self.fine_tuner is None else self.fine_tuner
        self.fine_tuner_ = clone(fine_tuner).fit(X, y)
        head = LogisticRegression() if self.head is None else self.head
        self.head_ = clone(head).fit(self.fine_tuner_.transform(X), y)
        self.classes_ = self.head_.classes_
        return self

    def _embed(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.fine_tuner_.transform(X)

    def predict(self, X: Any) -> np.ndarray:
        """Predict the label of each text.

        Parameters
        ----------
        X : texts

        Returns
        -------
        ndarray of shape (n,)
        """
        return self.head_.predict(self._embed(X))

    @available_if(lambda self: _head_has(self, "predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class for each text (when the head gives them).

        Parameters
        ----------
        X : texts

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        return self.head_.predict_proba(self._embed(X))

    @available_if(lambda self: _head_has(self, "decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """The head's decision function on the texts' embeddings.

        Parameters
        ----------
        X : texts

        Returns
        -------
        ndarray
        """
        return self.head_.decision_function(self._embed(X))


def _head_has(classifier: FineTunedClassifier, method: str) -> bool:
    head = getattr(classifier, "head_", None) or classifier.head or LogisticRegression()
    return hasattr(head, method)
