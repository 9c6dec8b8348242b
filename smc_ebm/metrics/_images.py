r"""Class proportions of generated images: a classifier applied to (weighted) walkers.

The Jarzynski paper's MNIST measurement (Carbone et al., 2023, Sec. 5.2): a classifier
labels each walker, and the model's proportion of class ``c`` is estimated by
:math:`\hat p_c = \sum_i w_i \mathbf 1[\mathrm{clf}(X_i) = c]`, with the normalised
Jarzynski weights :math:`w = \mathrm{softmax}(A)` (or ``1/N`` for unweighted walkers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from smc_ebm._naming import OldAttributes, renamed


def class_proportions(
    predicted: Any,
    classes: Sequence[int],
    log_weights: Any = None,
) -> np.ndarray:
    r"""Weighted class proportions :math:`\hat p_c = \sum_i w_i \mathbf 1[y_i = c]`.

    Args:
        predicted: ``(N,)`` predicted labels of the walkers.
        classes: the ``K`` classes, in the order of the result.
        log_weights: ``(N,)`` log-weights (normalised here with a softmax); ``None``:
            uniform weights.

    Returns:
        ``(K,)`` proportions; they sum to the weight of the walkers whose label is in
        ``classes`` (1 when every label is).

    Raises:
        ValueError: shapes disagree or the weights are not finite.
    """
    y = np.asarray(predicted).reshape(-1)
    if log_weights is None:
        w = np.full(y.shape, 1.0 / max(y.size, 1))
    else:
        a = np.asarray(log_weights, np.float64).reshape(-1)
        if a.shape != y.shape:
            raise ValueError(f"log_weights shape {a.shape} does not match predicted {y.shape}.")
        if not np.all(np.isfinite(a)):
            raise ValueError("log_weights contain NaN or inf.")
        w = np.exp(a - a.max())
        w /= w.sum()
    return np.array([float(np.sum(w[y == c])) for c in classes])


def effective_sample_size(log_weights: Any) -> float:
    r"""Kish ESS :math:`(\sum_i w_i)^2 / \sum_i w_i^2` of unnormalised log-weights."""
    a = np.asarray(log_weights, np.float64).reshape(-1)
    w = np.exp(a - a.max())
    return float(w.sum() ** 2 / np.sum(w**2))


def proportion_errors(
    predicted: Any, classes: Sequence[int], log_weights: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Proportions and their Monte Carlo standard errors.

    The standard error of a self-normalised estimate is taken as
    :math:`\sqrt{\hat p_c (1 - \hat p_c) / \mathrm{ESS}}` (the delta-method value for
    weights independent of the labels; for correlated walkers it is a lower bound).
    """
    p = class_proportions(predicted, classes, log_weights)
    n = np.asarray(predicted).size
    ess = n if log_weights is None else effective_sample_size(log_weights)
    return p, np.sqrt(p * (1.0 - p) / max(ess, 1.0))


@dataclasses.dataclass(frozen=True)
class DigitClassifier(OldAttributes):
    """A scikit-learn classifier of images in ``[-1, 1]``, and its held-out accuracy.

    Attributes:
        model: the fitted scikit-learn estimator.
        classes: the labels it predicts.
        test_accuracy: accuracy on the held-out images.
        num_train, num_test: sizes of the two splits.
    """

    model: Any
    classes: tuple[int, ...]
    test_accuracy: float
    num_train: int
    num_test: int

    def predict(self, x: Any) -> np.ndarray:
        """Labels of ``(n, d)`` images; values are clipped to ``[-1, 1]`` first."""
        return np.asarray(self.model.predict(np.clip(np.asarray(x, np.float64), -1.0, 1.0)))

    def class_index(self, x: Any) -> Any:
        """The index in ``classes`` of the label of one image ``(d,)``, traceable by JAX.

        The fitted logistic regression's decision on the image clipped to ``[-1, 1]``: the
        argmax of its scores (the sign of the one score for two classes), in ``x``'s dtype.
        For ``se.metrics.class_masses(within=True)``.
        """
        import jax.numpy as jnp

        coef = jnp.asarray(self.model.coef_, x.dtype)
        intercept = jnp.asarray(self.model.intercept_, x.dtype)
        position = jnp.asarray([self.classes.index(c) for c in self.model.classes_])
        scores = coef @ jnp.clip(x, -1.0, 1.0) + intercept
        best = (scores[0] > 0).astype(int) if coef.shape[0] == 1 else jnp.argmax(scores)
        return position[best]

    def proportions(self, x: Any, log_weights: Any = None) -> np.ndarray:
        """:func:`class_proportions` of the predicted labels of ``x``."""
        return class_proportions(self.predict(x), self.classes, log_weights)


@renamed()
def digit_classifier(
    key: PRNGKeyArray,
    labels: Sequence[int] = (2, 3, 6),
    *,
    test_fraction: float = 0.3,
    C: float = 1.0,
    loader: Callable[..., Any] | None = None,
) -> DigitClassifier:
    r"""Logistic regression on the digits ``labels`` (all their images, equal classes).

    The images are prepared as in :func:`smc_ebm.datasets.digits` (``[-1, 1]``,
    dequantised) so that the classifier sees what the model is trained on; a random
    ``test_fraction`` of them is held out to measure the accuracy.

    Args:
        key: PRNG key (dequantisation noise and the split).
        labels: the classes.
        test_fraction: fraction held out for the test accuracy.
        C: inverse L2 regularisation of the logistic regression.
        loader: ``loader(key, labels, None, n=None)`` returning a ``Dataset`` with
            ``info["labels"]``; default :func:`smc_ebm.datasets.digits`.

    Returns:
        A :class:`DigitClassifier`.
    """
    from sklearn.linear_model import LogisticRegression

    from smc_ebm.datasets._images import digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    k_data, k_split = jax.random.split(key)
    data = (loader or digits)(k_data, labels, None)
    x = np.asarray(data.samples, np.float64)
    y = np.asarray(data.info["labels"])
    perm = np.asarray(jax.random.permutation(k_split, x.shape[0]))
    num_test = max(1, int(round(test_fraction * x.shape[0])))
    test, train = perm[:num_test], perm[num_test:]
    model = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
    acc = float(np.mean(model.predict(x[test]) == y[test]))
    return DigitClassifier(model, tuple(int(c) for c in labels), acc, train.size, test.size)
