"""Packed rows with shared prefixes: every distinct prefix of a batch is computed once, no padding waste.

Requests go into prefix trees (tries) of token ids: the choices of one question share their context,
and questions with a common prefix (few-shot examples, MMLU's subject line, a shared BOS) share it
too. A row holds one or more tries laid out in depth-first order; a token attends exactly to its
ancestors and itself through a 4-D additive attention mask, and its position id is its depth, so its
hidden state equals the one it has in its own unpacked (context + continuation) sequence. Several
tries fill one row (block-diagonal mask), so padding is only the tail of a row. The same layout is
used for every candidate model, which the prefix cache (:mod:`layershear.engine.prefix_cache`) relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from layershear.engine.forward import score_positions, to_device
from layershear.engine.requests import EncodedRequest

#: Architectures whose forward accepts a custom 4-D mask (or a dict of them per layer type) and
#: explicit position ids; the packed layout is tested on each of them against the unpacked one.
PACKABLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "phi3",
                                  "gpt_neox", "gpt2"})
_LAYER_TYPES = {"full_attention", "sliding_attention"}
_OPEN_ROWS = 8   # rows still accepting tries while packing (first fit among the most recent ones)


@dataclass(frozen=True)
class PackedRow:
    """One row: ``tokens``, their ``positions`` (depth in the trie) and ``ends`` (index of the last
    descendant of each token, inclusive), all in depth-first order; token i attends to j iff
    j <= i <= ends[j]."""

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    ends: tuple[int, ...]


@dataclass(frozen=True)
class PackedBatch:
    """Rows run in one forward pass and the positions scored in them.

    ``requests`` are the request indices scored here; scored position k is hidden state
    ``[rows[k], cols[k]]`` predicting token ``targets[k]`` of request ``requests[owners[k]]``.
    """

    rows: tuple[PackedRow, ...]
    requests: tuple[int, ...]
    score_rows: tuple[int, ...]
    score_cols: tuple[int, ...]
    targets: tuple[int, ...]
    owners: tuple[int, ...]

    @property
    def width(self) -> int:
        return max(len(r.tokens) for r in self.rows)

    @property
    def real_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)


class _Trie:
    """Prefix tree of one row; node 0 is a virtual root. ``share=False`` never merges prefixes."""

    def __init__(self, share: bool) -> None:
        self.share = share
        self.tokens: list[int] = [-1]
        self.parent: list[int] = [-1]
        self.children: list[dict[int, int]] = [{}]

    @property
    def size(self) -> int:
        return len(self.tokens) - 1

    def insert(self, seq: Sequence[int]) -> list[int]:
        """Node ids of ``seq``'s tokens, adding the missing ones."""
        node, path = 0, []
        for tok in seq:
            child = self.children[node].get(tok) if self.share else None
            if child is None:
                child = len(self.tokens)
                self.tokens.append(tok)
                self.parent.append(node)
                self.children.append({})
                if self.share:
                    self.children[node][tok] = child
            node = child
            path.append(node)
        return path

    def rollback(self, size: int) -> None:
        """Remove the nodes added after the trie had ``size`` nodes."""
        while self.size > size:
            node = len(self.tokens) - 1
            self.children[self.parent[node]].pop(self.tokens[node], None)
            del self.tokens[-1], self.parent[-1], self.children[-1]

    def layout(self) -> tuple[PackedRow, list[int]]:
        """The row in depth-first order, and the row index of every node id (index 0 unused)."""
        kids: list[list[int]] = [[] for _ in self.tokens]
        for node in range(1, len(self.tokens)):
            kids[self.parent[node]].append(node)
        order, depth, where = [], [0] * len(self.tokens), [0] * len(self.tokens)
        ends = [0] * self.size
        stack = [(child, 0, False) for child in reversed(kids[0])]
        while stack:
            node, d, done = stack.pop()
            if done:
                ends[where[node]] = len(order) - 1
                continue
            where[node], depth[node] = len(order), d
            order.append(node)
            stack.append((node, d, True))
            stack.extend((child, d + 1, False) for child in reversed(kids[node]))
        row = PackedRow(tuple(self.tokens[n] for n in order), tuple(depth[n] for n in order), tuple(ends))
        return row, where


def pack_requests(requests: Sequence[EncodedRequest], *, max_length: int, row_tokens: int, batch_tokens: int,
                  share: bool = True, pack: bool = True) -> list[PackedBatch]:
    """Lay ``requests`` out in packed rows and group the rows into batches.

    With ``share`` the choices of one item go into one trie (their common context once) and items
    are placed in token order, so items with a common prefix land in the same row and share it.
    Without it every request is its own path (packing only). With ``pack`` tries are placed
    first-fit into rows of ``row_tokens`` tokens (a larger trie gets a row of its own), else each
    trie gets a row of its own.
    Rows are grouped longest first into batches of at most ``batch_tokens`` padded tokens (at least
    one row) whose rows are at least 7/8 as long as the batch's longest.

    Returns:
        Batches covering every request exactly once.
    """
    inputs = [r.truncated(max_length) for r in requests]
    units: dict[int, list[int]] = {}
    for k, req in enumerate(requests):
        units.setdefault(req.item if share else k, []).append(k)
    sizes = {u: _standalone_size([inputs[k][0] for k in ks], share) for u, ks in units.items()}
    if share:
        order = sorted(units, key=lambda u: (inputs[units[u][0]][0], u))
    else:
        order = sorted(units, key=lambda u: (-sizes[u], u))

    rows: list[tuple[_Trie, dict[int, list[int]]]] = []      # trie, request -> node path
    open_rows: list[tuple[_Trie, dict[int, list[int]]]] = []
    for u in order:
        trie = _Trie(share)
        entry = (trie, {k: trie.insert(inputs[k][0]) for k in units[u]})
        if not pack or trie.size >= row_tokens:       # a row of its own (always with row_tokens=0)
            rows.append(entry)
            continue
        for trie, paths in open_rows:
            if row_tokens - trie.size < sizes[u] and trie is not open_rows[-1][0]:
                continue                               # cannot fit unless it shares a prefix with its neighbour
            before = trie.size
            new = {k: trie.insert(inputs[k][0]) for k in units[u]}
            if trie.size <= row_tokens:
                paths.update(new)
                break
            trie.rollback(before)
        else:
            rows.append(entry)
            open_rows = (open_rows + [entry])[-_OPEN_ROWS:]

    laid = [(trie.layout(), paths) for trie, paths in rows]
    laid.sort(key=lambda x: -len(x[0][0].tokens))
    batches, current = [], []
    for entry in laid:
        width = len(current[0][0][0].tokens) if current else 0
        if current and ((len(current) + 1) * width > batch_tokens or 8 * len(entry[0][0].tokens) < 7 * width):
            batches.append(_batch(current, inputs))
            current = []
        current.append(entry)
    if current:
        batches.append(_batch(current, inputs))
    return batches


def _standalone_size(seqs: list[list[int]], share: bool) -> int:
    trie = _Trie(share)
    for seq in seqs:
        trie.insert(seq)
    return trie.size


def _batch(entries, inputs) -> PackedBatch:
    rows, requests, srows, scols, targets, owners = [], [], [], [], [], []
    for r, ((row, where), paths) in enumerate(entries):
        rows.append(row)
        for k, path in sorted(paths.items()):
            _, first, tgt = inputs[k]
            owner = len(requests)
            requests.append(k)
            for pos, tok in zip(range(first, first + len(tgt)), tgt):
                srows.append(r)
                scols.append(where[path[pos]])
                targets.append(tok)
                owners.append(owner)
    return PackedBatch(tuple(rows), tuple(requests), tuple(srows), tuple(scols), tuple(targets), tuple(owners))


def packable(model) -> bool:
    """Whether ``model``'s architecture takes the packed layout (see :data:`PACKABLE_MODEL_TYPES`)."""
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    return config.model_type in PACKABLE_MODEL_TYPES and (layer_types is None or set(layer_types) <= _LAYER_TYPES)


def _allowed(batch: PackedBatch, device: torch.device, window: int | None) -> torch.Tensor:
    """bool ``[rows, 1, width, width]``: query i may attend to key j (ancestor-or-self, within ``window``)."""
    width = batch.width
    ends = torch.arange(width).repeat(len(batch.rows), 1)           # padding attends to itself only
    pos = torch.zeros(len(batch.rows), width, dtype=torch.long)
    for r, row in enumerate(batch.rows):
        ends[r, :len(row.ends)] = torch.tensor(row.ends)
        pos[r, :len(row.positions)] = torch.tensor(row.positions)
    ends, pos = to_device(ends, device), to_device(pos, device)
    idx = torch.arange(width, device=device)
    allowed = (idx[None, None, :] <= idx[None, :, None]) & (idx[None, :, None] <= ends[:, None, :])
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    return allowed[:, None]


def attention_masks(model, batch: PackedBatch, device: torch.device):
    """The 4-D additive mask(s) for ``batch`` in the model's dtype: 0 where attended, the dtype's
    minimum elsewhere; a dict per layer type for models that take one (``config.layer_types``)."""
    config, dtype = model.config, next(model.parameters()).dtype

    def additive(window: int | None) -> torch.Tensor:
        allowed = _allowed(batch, device, window)
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return {t: additive(window if t == "sliding_attention" else None) for t in set(layer_types)}
    return additive(window)


@torch.inference_mode()
def packed_loglikelihoods(model, batch: PackedBatch, *, pad_id: int, full_logits: bool = False,
                          copies: int = 1, to_host: bool = True) -> torch.Tensor:
    """Summed continuation log-probabilities of the requests of one packed batch (``copies``,
    ``to_host``: see :func:`layershear.engine.forward.score_positions`).

    Returns:
        float64 tensor of shape ``[len(batch.requests)]`` (``[copies, len(batch.requests)]`` when
        ``copies`` > 1; natural-log units), on CPU (``to_host=False``: on the LM head's device).
    """
    device = next(model.parameters()).device
    width = batch.width
    input_ids = torch.full((len(batch.rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros(len(batch.rows), width, dtype=torch.long)
    for r, row in enumerate(batch.rows):
        input_ids[r, :len(row.tokens)] = torch.tensor(row.tokens)
        position_ids[r, :len(row.positions)] = torch.tensor(row.positions)
    return score_positions(
        model, to_device(input_ids, device),
        rows=torch.tensor(batch.score_rows), cols=torch.tensor(batch.score_cols),
        targets=torch.tensor(batch.targets), owners=torch.tensor(batch.owners),
        num_out=len(batch.requests), full_logits=full_logits, copies=copies, to_host=to_host,
        position_ids=to_device(position_ids, device), attention_mask=attention_masks(model, batch, device))
