"""Raw-text corpora (C4, WikiText-2, CodeAlpaca, LIMA) as calibration and evaluation sets.

lm-eval scores C4 and WikiText with ``output_type: loglikelihood_rolling`` (perplexities, no
accuracy), so AccBasedRelevance is not defined on them there. layershear scores a text document by
**next-token accuracy** (the share of its tokens that are the model's top-1 prediction) and by
token perplexity, with r(D) = 1 / vocabulary size; the tokenisation and chunking are in
:mod:`layershear.scoring.text`. Here: one :class:`TextDoc` per document, with lm-eval's text
preprocessing where lm-eval has the task.

* ``wikitext``: lm-eval ``wikitext`` (``EleutherAI/wikitext_document_level``, ``wikitext-2-raw-v1``):
  one document per article (``page``), detokenised by lm-eval's ``wikitext_detokenizer``
  (:func:`wikitext_detokenize`). Scored on ``test``, calibrated on ``validation``. Local copy: the
  line-level raw files ``wikitext-2-raw/{test,valid}.txt``, split into articles at the lines
  `` = Title = `` (one ``=`` a side).
* ``c4``: lm-eval ``c4`` (``allenai/c4``, ``en``; the same detokeniser on ``text``). Local copy:
  ``c4/c4_demo.json``, 300 real C4 documents whose shard is undocumented, exposed as ``validation``;
  calibration and evaluation both draw from it, evaluation skipping the calibration documents.
* ``codealpaca`` (``sahil2801/CodeAlpaca-20k``; local ``code_alpaca_2k.json``, 2,017 examples) and
  ``lima`` (``GAIR/lima``; local ``lima.json``, 1,029 conversations in the alpaca format): instruction
  data, not in lm-eval; a document is its non-empty fields (history turns, instruction, input,
  output; LIMA on the Hub: its ``conversations``) joined by ``"\\n\\n"``. One ``train`` split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layershear.data.benchmarks.base import Row, TaskSpec
from layershear.data.benchmarks.local import read_json, require
from layershear.errors import BenchmarkError

TEXT_MEASURES = ("acc", "perplexity")
"""What a text task reports: next-token accuracy and token perplexity (:mod:`layershear.scoring.text`)."""


@dataclass(frozen=True)
class TextDoc:
    """One raw-text document; ``doc_id`` is its 0-based position in the split.

    Raises:
        BenchmarkError: ``text`` is empty or only whitespace.
    """

    task: str
    doc_id: int
    text: str

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise BenchmarkError(f"{self.task} doc {self.doc_id}: empty text; a text document needs at least one token")


_WIKITEXT_REPLACE = (("s '", "s'"), (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                     (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "))
_WIKITEXT_BRACKETS = ((r"\(\s*([^\)]*?)\s*\)", r"(\1)"), (r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
                      (r"{\s*([^}]*?)\s*}", r"{\1}"), (r"\"\s*([^\"]*?)\s*\"", r'"\1"'), (r"'\s*([^']*?)\s*'", r"'\1'"))
_WIKITEXT_MISC = (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \u00b0 ", "\u00b0"), (" \n", "\n"),
                  ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"))


def wikitext_detokenize(text: str) -> str:
    """lm-eval's ``wikitext_detokenizer`` (``lm_eval/tasks/wikitext/preprocess_wikitext.py``), step by step.

    Example:
        >>> wikitext_detokenize("a guest @-@ starring role , in 2000 .")
        'a guest-starring role, in 2000 .'
    """
    for old, new in _WIKITEXT_REPLACE[:1]:
        text = text.replace(old, new)
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for old, new in _WIKITEXT_REPLACE[1:]:
        text = text.replace(old, new)
    for pattern, repl in _WIKITEXT_BRACKETS:
        text = re.sub(pattern, repl, text)
    for old, new in _WIKITEXT_MISC:
        text = text.replace(old, new)
    return text


_ARTICLE = re.compile(r"^ = [^=].* = $")


def wikitext_articles(path: Path) -> list[dict[str, Any]]:
    """Split a line-level WikiText raw file into ``{"page": ...}`` rows, one per article (a line
    `` = Title = `` starts one), as ``EleutherAI/wikitext_document_level`` holds them."""
    pages: list[list[str]] = []
    with require(path).open(encoding="utf-8") as f:
        for line in f:
            if _ARTICLE.match(line.rstrip("\n")) or not pages:
                pages.append([])
            pages[-1].append(line)
    return [{"page": "".join(lines)} for lines in pages if "".join(lines).strip()]


def _joined(row: Row) -> str:
    if row.get("conversations"):
        return "\n\n".join(str(turn) for turn in row["conversations"])
    turns = [str(x) for pair in row.get("history") or () for x in pair]
    return "\n\n".join(p for p in (*turns, row.get("instruction"), row.get("input"), row.get("output"))
                       if isinstance(p, str) and p.strip())


def _converter(field: str | None, detokenize: bool):
    def doc_to_item(row: Row, task: str, doc_id: int) -> TextDoc:
        text = _joined(row) if field is None else str(row[field])
        return TextDoc(task, doc_id, wikitext_detokenize(text) if detokenize else text)
    return doc_to_item


def _spec(name: str, hub: tuple[str, str | None], splits: tuple[str, str], files: dict[str, str],
          fields: tuple[str, ...], field: str | None, detokenize: bool, reader) -> TaskSpec:
    return TaskSpec(
        name=name, hub_path=hub[0], hub_name=hub[1], eval_split=splits[0], train_split=splits[1],
        measures=TEXT_MEASURES, fields=fields, doc_to_item=_converter(field, detokenize),
        local_files={split: (f,) for split, f in files.items()},
        read_local=lambda root, split: reader(root / files[split]),
        output_type="loglikelihood_rolling")


def _read_list(path: Path) -> list[dict[str, Any]]:
    rows = read_json(path)
    if not all(isinstance(r, dict) for r in rows):
        raise BenchmarkError(f"{path}: expected a JSON list of objects")
    return rows


WIKITEXT = _spec("wikitext", ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1"), ("test", "validation"),
                 {"test": "wikitext/wikitext-2-raw/test.txt", "validation": "wikitext/wikitext-2-raw/valid.txt"},
                 ("page",), "page", True, wikitext_articles)
C4 = _spec("c4", ("allenai/c4", "en"), ("validation", "validation"), {"validation": "c4/c4_demo.json"},
           ("text",), "text", True, _read_list)
CODEALPACA = _spec("codealpaca", ("sahil2801/CodeAlpaca-20k", None), ("train", "train"),
                   {"train": "codealpaca/code_alpaca_2k.json"}, ("instruction", "input", "output"), None, False,
                   _read_list)
LIMA = _spec("lima", ("GAIR/lima", None), ("train", "train"), {"train": "lima/lima.json"},
             ("instruction", "input", "output"), None, False, _read_list)
TEXT_TASKS = (C4, WIKITEXT, CODEALPACA, LIMA)
