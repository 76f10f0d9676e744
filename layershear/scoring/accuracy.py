"""Multiple-choice accuracy from log-likelihoods: lm-eval's ``acc`` and ``acc_norm``, and the accuracy of a model.

lm-eval (``multiple_choice`` tasks, ``process_results``) picks the choice with the highest summed
log-likelihood (``acc``) or the highest log-likelihood per character of the choice string
(``acc_norm``); layershear calls these two the *measures* (lm-eval calls them metrics; in layershear
"metric" names a block-importance metric). :class:`ModelAccuracy` is Acc(f_-S, D) of one model on a
document set, with its per-task parts and per-document correctness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from layershear.data.benchmarks import MCItem, get_task, random_accuracy
from layershear.errors import ScoringError

MEASURES = ("acc", "acc_norm")

#: Accuracies within this of r(D) count as "at chance": r(D) is a float mean of 1/num_choices, so an
#: exactly-at-chance model (2 of 10 five-choice items) can otherwise compare as 1e-17 above it.
CHANCE_TOLERANCE = 1e-9


def above_random(acc: float, r: float) -> bool:
    """Whether ``acc`` exceeds r(D) by more than :data:`CHANCE_TOLERANCE` (relevance is defined)."""
    return acc - r > CHANCE_TOLERANCE


def measure_of(task: str, acc_norm: bool | None = None) -> str:
    """The measure ``task`` is scored by: ``acc_norm`` if ``acc_norm`` is True, ``acc`` if False;
    None = lm-eval's choice (``acc_norm`` where the task's lm-eval YAML reports it, else ``acc``)."""
    if acc_norm is not None:
        return "acc_norm" if acc_norm else "acc"
    return "acc_norm" if "acc_norm" in get_task(task).measures else "acc"


def item_scores(items: Sequence[MCItem], lls: torch.Tensor, *, measures: Sequence[str]) -> list[torch.Tensor]:
    """Per-item choice scores: ``ll_i`` for ``acc``, ``ll_i / len(choice_i)`` for ``acc_norm``.

    Args:
        items: the documents, in the order their requests were encoded.
        lls: float64 tensor ``[sum(num_choices)]`` of log-likelihoods, item-major then choice order.
        measures: one measure per item, ``acc`` or ``acc_norm`` (lm-eval ``process_results``: the
            divisor is the character length of the choice string, without the target delimiter).

    Returns:
        One float64 tensor ``[num_choices]`` per item.

    Raises:
        ScoringError: unknown measure, a length mismatch, or a log-likelihood that is NaN or
            infinite (argmax over NaN would pick choice 0 and count it as an answer).
    """
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ScoringError(f"Unknown measure {unknown[0]!r}; choose one of: {', '.join(MEASURES)}")
    total = sum(item.num_choices for item in items)
    if lls.numel() != total or len(measures) != len(items):
        raise ScoringError(f"Got {lls.numel()} log-likelihoods and {len(measures)} measures for "
                           f"{total} choices of {len(items)} items")
    check_finite_loglikelihoods(items, lls)
    out, k = [], 0
    for item, measure in zip(items, measures):
        scores = lls[k:k + item.num_choices]
        if measure == "acc_norm":
            scores = scores / torch.tensor(item.choice_lengths, dtype=scores.dtype).clamp(min=1)
        out.append(scores)
        k += item.num_choices
    return out


def check_finite_loglikelihoods(items: Sequence[MCItem], lls: torch.Tensor) -> None:
    """Refuse NaN or infinite log-likelihoods, naming the first document and choice.

    Args:
        items: the documents; ``lls``: float ``[sum(num_choices)]``, item-major then choice order.

    Raises:
        ScoringError: a log-likelihood is not finite (the weights hold NaN/Inf, or the forward
            overflowed in a low-precision dtype).
    """
    finite = torch.isfinite(lls)
    if bool(finite.all()):
        return
    k = int((~finite).nonzero()[0])
    value = float(lls[k])
    for item in items:
        if k < item.num_choices:
            raise ScoringError(f"the log-likelihood of {item.task} doc {item.doc_id} choice {k} is {value} "
                               f"({int((~finite).sum())} not finite); the model overflows in this dtype or its "
                               "weights are corrupt: try --dtype fp32, or check the checkpoint")
        k -= item.num_choices


def correct(items: Sequence[MCItem], scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-item correctness ``argmax(scores) == gold`` (ties go to the first index, as ``np.argmax``).

    Returns:
        bool tensor of shape ``[len(items)]``.
    """
    return torch.tensor([int(torch.argmax(s)) == item.gold for item, s in zip(items, scores)], dtype=torch.bool)


def stderr(values: Sequence[float] | torch.Tensor) -> float:
    """Standard error of the mean (sample std / sqrt(n)), as lm-eval's ``mean_stderr``."""
    x = torch.as_tensor(values, dtype=torch.float64)
    n = x.numel()
    return float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


@dataclass(frozen=True)
class ModelAccuracy:
    """Accuracy of the model without the blocks ``removed`` on a document set D.

    ``accuracy`` is the micro average over all items (each item's own measure, see
    :func:`measure_of`), ``random`` is r(D) over the same items (a fraction in [0, 1]);
    ``gold_prob`` is the mean softmax probability (over the item's choices) of the gold choice, a
    smooth tie-breaker. A candidate eliminated by racing (:mod:`layershear.scoring.racing`) has
    ``exact=False`` and these numbers on the items it was scored on only (``correct`` then covers
    those items).
    """

    removed: frozenset[int]
    accuracy: float
    random: float
    gold_prob: float
    accuracy_by_task: dict[str, float]
    random_by_task: dict[str, float]
    correct: tuple[bool, ...] = field(repr=False)
    loglikelihoods: torch.Tensor | None = field(default=None, repr=False, compare=False)  # float64 [num_requests]
    exact: bool = True        # False: a racing estimate on the first ``sequences`` requests of a random slice order
    sequences: int = 0        # (context, continuation) requests scored for this result
    perplexity_by_task: dict[str, float] = field(default_factory=dict)   # text corpora: token perplexity

    @property
    def above_random(self) -> bool:
        return above_random(self.accuracy, self.random)

    @property
    def rank_key(self) -> tuple:
        """The order greedy and beam search rank models by (lower = better): higher accuracy, then
        higher gold probability, then the smaller set of removed blocks."""
        return (-self.accuracy, -self.gold_prob, tuple(sorted(self.removed)))


def _token_scores(docs: Sequence, lls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness and log-probability of text tokens from their (top-1 hit, log-probability) pairs."""
    pairs = lls.view(-1, 2)
    if not bool(torch.isfinite(pairs[:, 1]).all()):
        k = int((~torch.isfinite(pairs[:, 1])).nonzero()[0])
        raise ScoringError(f"the log-likelihood of {docs[k].task} doc {docs[k].doc_id} chunk {docs[k].chunk} token "
                           f"{docs[k].position} is {float(pairs[k, 1])}; the model overflows in this dtype or its "
                           "weights are corrupt: try --dtype fp32, or check the checkpoint")
    return pairs[:, 0] > 0.5, pairs[:, 1]


def model_accuracy(removed: frozenset[int], items: Sequence, measures: Sequence[str],
                   item_requests: Sequence[Sequence[int]], lls: torch.Tensor,
                   index: Sequence[int] | None = None) -> ModelAccuracy:
    """The :class:`ModelAccuracy` of the model without ``removed`` from its per-request log-likelihoods.

    Args:
        removed: the removed blocks.
        items: the document set D: multiple-choice items, and text tokens
            (:class:`layershear.scoring.text.TokenItem`, each its own item: correct when it is the
            top-1 prediction; gold probability = its probability); ``measures[i]`` (acc or
            acc_norm) is item i's measure.
        item_requests: indices into ``lls`` of each item's choices, in choice order (a token: its
            top-1 hit, then its log-probability).
        lls: float64 ``[num_requests]`` summed continuation log-likelihoods (nats), or top-1 hits.
        index: only these item indices (a racing estimate, ``exact=False``); None = all of D.
    """
    exact = index is None
    index = list(range(len(items))) if index is None else list(index)
    docs = [items[i] for i in index]
    mc = [k for k, d in enumerate(docs) if isinstance(d, MCItem)]
    text = [k for k, d in enumerate(docs) if not isinstance(d, MCItem)]
    ok = torch.zeros(len(docs), dtype=torch.bool)
    probs = torch.zeros(len(docs), dtype=torch.float64)
    token_lls = torch.zeros(len(docs), dtype=torch.float64)
    if mc:
        sub = lls[[k for j in mc for k in item_requests[index[j]]]]
        scores = item_scores([docs[j] for j in mc], sub, measures=[measures[index[j]] for j in mc])
        ok[mc] = correct([docs[j] for j in mc], scores)
        probs[mc] = torch.stack([torch.softmax(sc, 0)[docs[j].gold] for j, sc in zip(mc, scores)])
    if text:
        hit, token_lls[text] = _token_scores([docs[j] for j in text], lls[[k for j in text for k in item_requests[index[j]]]])
        ok[text], probs[text] = hit, token_lls[text].exp()
    by_task: dict[str, list[int]] = {}
    for k, item in enumerate(docs):
        by_task.setdefault(item.task, []).append(k)
    return ModelAccuracy(
        removed=removed,
        accuracy=float(ok.double().mean()),
        random=random_accuracy(docs),
        gold_prob=float(probs.mean()),
        accuracy_by_task={t: float(ok[idx].double().mean()) for t, idx in sorted(by_task.items())},
        random_by_task={t: random_accuracy([docs[k] for k in idx]) for t, idx in sorted(by_task.items())},
        correct=tuple(bool(x) for x in ok),
        loglikelihoods=lls if exact else None,
        exact=exact,
        sequences=sum(len(item_requests[i]) for i in index),
        perplexity_by_task={t: float(torch.exp(-token_lls[idx].mean())) for t, idx in sorted(by_task.items())
                            if not isinstance(docs[idx[0]], MCItem)},
    )
