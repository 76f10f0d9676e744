"""Batched greedy generation (layershear.engine.generate): lm-eval's generate_until on tiny random models."""

from __future__ import annotations

import pytest
from helpers import load, word_tokenizer

from layershear.engine.generate import GenerationEngine, GenerationStats, cut_at_stops, generate_until
from layershear.errors import LayershearError, ScoringError
from layershear.export.exporter import Exporter

# contexts of different lengths, longer than the tiny sliding window (4), so batches are left padded
CONTEXTS = [" ".join(f"w{3 + (7 * i + 3 * k) % 120}" for k in range(5 + 3 * i % 11)) for i in range(7)]
GEN = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(model, contexts=CONTEXTS, **kw):
    kw = {"until": ["w999"], "max_gen_toks": GEN, "batch_size": 3, **kw}
    return generate_until(model, word_tokenizer(), contexts, **kw)


def test_cut_at_stops_is_lm_eval_split() -> None:
    assert cut_at_stops("18\n\nQuestion: next", ["Question:", "</s>"]) == "18\n\n"
    assert cut_at_stops("a</s>bQuestion:", ["Question:", "</s>"]) == "a"      # the earliest stop wins
    assert cut_at_stops("no stop here", ["Question:", ""]) == "no stop here"  # '' is ignored, as in lm-eval
    assert cut_at_stops("Question: at once", ["Question:"]) == ""


@pytest.mark.parametrize("name", ["llama", "qwen3", "gpt_neox"])
def test_batched_equals_unbatched_in_input_order(models, name) -> None:
    model = models(name)
    batched, stats = _gen(model)
    one_by_one = [_gen(model, [c], batch_size=1)[0][0] for c in CONTEXTS]
    assert batched == one_by_one
    assert all(t.strip() for t in batched)
    assert stats.prompts == len(CONTEXTS) and stats.generated_tokens == GEN * len(CONTEXTS)   # no stop: all GEN tokens
    assert stats.forward_passes == GEN * 3 and stats.seconds > 0      # 3 batches of GEN steps each


def test_stops_at_the_first_stop_string_and_counts_tokens(models) -> None:
    model = models("llama")
    free, _ = _gen(model)
    words = free[0].split()
    stop = words[3]                                   # a word the model writes as its 4th token
    texts, stats = _gen(model, until=[stop])
    assert texts[0] == free[0][:free[0].index(stop)]  # cut before the stop string
    assert stats.generated_tokens < GEN * len(CONTEXTS)
    # each row stops on its own; the others are generated as without the stop string
    assert all(t == cut_at_stops(f, [stop]) for t, f in zip(texts, free))


def test_eos_text_is_a_stop_string_and_generation_config_is_untouched(models) -> None:
    model = models("llama")
    before = model.generation_config.to_dict()
    engine = GenerationEngine(model, word_tokenizer(), CONTEXTS, until=["w5"], max_gen_toks=GEN)
    assert engine.until == ("w5", "</s>")
    engine.run()
    assert model.generation_config.to_dict() == before
    # the longest context comes first (lm-eval's order), each batch in that order
    lengths = [len(engine.ids[k]) for batch in engine.batches for k in batch]
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma2", "mistral", "gpt_neox"])
def test_removed_blocks_generate_as_the_exported_model(models, tiny_checkpoints, tmp_path, name) -> None:
    """The KV cache inside remove_blocks (layer_idx renumbered) gives the exported checkpoint's text."""
    model = models(name)
    removed = {1, 4}
    exported = load(Exporter(tiny_checkpoints(name)).export(removed, tmp_path / "out"))
    got, _ = _gen(model, removed=removed)
    want, _ = _gen(exported)
    assert got == want
    assert got != _gen(model)[0]                       # removal changes the text
    assert len(model.model.layers if hasattr(model, "model") else model.gpt_neox.layers) == 6   # restored


def test_left_truncation_keeps_the_last_tokens(models) -> None:
    model = models("llama")
    long_ctx = " ".join(f"w{3 + k % 120}" for k in range(40))
    engine = GenerationEngine(model, word_tokenizer(), [long_ctx], until=["w999"], max_gen_toks=GEN, max_length=GEN + 10)
    assert len(engine.ids[0]) == 10 and engine.ids[0] == word_tokenizer()(long_ctx)["input_ids"][-10:]
    bos = GenerationEngine(model, word_tokenizer(), ["w7 w8"], until=["x"], max_gen_toks=GEN, add_bos=True)
    assert bos.ids[0][0] == word_tokenizer().bos_token_id and bos.num_tokens == 3


def test_bad_arguments_raise(models) -> None:
    model = models("llama")
    with pytest.raises(ScoringError, match="at least one context"):
        generate_until(model, word_tokenizer(), [], until=["x"])
    with pytest.raises(ScoringError, match="no room"):
        generate_until(model, word_tokenizer(), ["w5"], until=["x"], max_gen_toks=8, max_length=8)
    with pytest.raises(ScoringError, match="no tokens"):
        generate_until(model, word_tokenizer(), [""], until=["x"])
    with pytest.raises(LayershearError, match="out of range|every block"):
        generate_until(model, word_tokenizer(), ["w5"], until=["x"], max_gen_toks=2, removed=[9])


def test_stats_add_up() -> None:
    a = GenerationStats(1, 10, 4, 4, 0.5)
    total = a + a
    assert total == GenerationStats(2, 20, 8, 8, 1.0) and total.tokens_per_second == 8.0
    assert GenerationStats().tokens_per_second == 0.0 and total.to_dict()["tokens_per_second"] == 8.0
