"""``layershear prune``: score, remove, evaluate, export (and push) — :func:`layershear.prune_model`."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from layershear.cli.options import Command, calib_options, command_line, data_of, data_options, model_options
from layershear.scoring.metric_names import METRICS

PLACEMENTS = ("auto", "replica", "split", "streamed")   # layershear.model.placement.PLACEMENTS
SEARCHES = ("greedy", "beam", "astar", "evolve")     # layershear.search.SEARCHES, named here so --help needs no torch
BOUND_NAMES = ("mcnemar", "serfling")                # layershear.scoring.racing.BOUNDS


@click.command(cls=Command, name="prune")
@click.argument("model")
@click.option("--ratio", type=float, default=None, help="Fraction of blocks to remove, in (0, 1); rounded half up.")
@click.option("--num-remove", type=int, default=None, help="Number of blocks to remove (instead of --ratio).")
@calib_options
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder for the pruned HF model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out model folder (only once the new one is complete).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run recorded in OUT.journal.jsonl (a rerun of the same "
              "command resumes too); fails when there is none.")
@click.option("--restart", is_flag=True, help="Discard the journal of an earlier run into --out and start afresh.")
@click.option("--search", "search", type=click.Choice(SEARCHES), default=None,
              help="greedy (the paper), beam (--beam W best partial sets per depth), astar (best-first over partial "
                   "sets, anytime within --search-budget) or evolve (greedy, then swap mutations with staged "
                   "selection) [default: greedy, or beam with --beam > 1].")
@click.option("--beam", "beam_width", type=click.IntRange(min=1), default=1, show_default=True,
              help="Beam width; 1 = the paper's greedy search, >1 backtracks over the best partial removal sets.")
@click.option("--search-budget", "search_budget", default=None,
              help="Cap on the search: model evaluations (400) or block-tokens (2e9tokens), comma-separated for both.")
@click.option("--search-seed", type=int, default=0, show_default=True, help="Seed of the evolutionary mutations.")
@click.option("--admissible", is_flag=True,
              help="astar: clip measured drops at 0, an upper bound if removing blocks never raises accuracy and "
                   "drops never shrink (expands more nodes).")
@click.option("--eval", "eval_spec", default=None,
              help="Eval suite run before and after pruning on held-out docs (eval-paper, eval-demo, or task[:limit],...).")
@click.option("--metric", type=click.Choice(METRICS), default="accuracy", show_default=True,
              help="Block importance: accuracy (the paper's relevance) or a baseline: cosine (ShortGPT), angular "
                   "(Gromov et al.), perplexity (SLEB), taylor (Shortened LLaMA).")
@click.option("--iterative/--one-shot", default=None,
              help="Rescore after every removal (default for accuracy and perplexity) or rank once (default for the others).")
@click.option("--race", is_flag=True, help="Racing: stop scoring a candidate once a confidence bound shows it cannot be "
              "removed this step (on growing random slices of the calibration set). Exact mode is the default.")
@click.option("--race-bound", type=click.Choice(BOUND_NAMES), default="mcnemar", show_default=True,
              help="With --race: mcnemar (paired: only documents the two candidates disagree on count) or serfling "
                   "(Hoeffding-Serfling on the accuracy difference).")
@click.option("--race-delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="With --race: probability per step that racing eliminates the candidate exact mode would remove.")
@click.option("--race-slices", type=click.IntRange(min=2), default=8, show_default=True,
              help="With --race: random slices of the calibration set (looks at the bound).")
@click.option("--compile", "compile_blocks", is_flag=True,
              help="torch.compile the decoder blocks' parts: faster forwards on CUDA once compiled, but the compile "
                   "costs seconds and bf16 rounds differently; pays off on long jobs only.")
@click.option("--push-to-hub", "push_repo", default=None, help="Also upload the pruned model to this Hub repo (user/name).")
@click.option("--private", is_flag=True, help="Create the Hub repo as private.")
@click.option("--placement", type=click.Choice(PLACEMENTS), default="auto", show_default=True,
              help="Where the weights live: replica (all on one device), split (over the GPUs this process sees), "
                   "streamed (blocks streamed from the shards, one at a time), auto (the first that fits).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard (e.g. 2GB, 500MB).")
@data_options
@model_options
def command(model, ratio, num_remove, calib_spec, acc_norm, engine, out, overwrite, resume, restart, search, beam_width,
            search_budget, search_seed, admissible, eval_spec, metric, iterative, race, race_bound, race_delta, race_slices,
            compile_blocks, push_repo, private, placement, max_shard_size, source,
            data_dir, batch_size, max_length, num_fewshot, add_bos, dtype, device, revision, trust_remote_code) -> None:
    """Score blocks, remove the least relevant ones greedily, export the pruned MODEL (Hub id or local folder).

    Every scored model and step is recorded in OUT.journal.jsonl; after an interruption (Ctrl-C,
    SIGTERM, a crash) the same command resumes where it stopped. The journal is removed once the
    model is written.
    """
    from layershear.cli.render import ERR, OUT, eval_table, reporting, steps_table
    from layershear.engine.distributed import is_main
    from layershear.errors import LayershearError
    from layershear.export.atomic import check_target, output_lock
    from layershear.export.exporter import parse_size
    from layershear.pipeline import prune_model
    from layershear.scoring.racing import RaceSettings
    from layershear.search import AStarSettings, EvolveSettings, parse_budget
    from layershear.search.journal import journal_path

    journal = journal_path(out)
    if resume and restart:
        raise LayershearError("--resume and --restart contradict each other; pass one")
    if (resume or restart) and metric != "accuracy":
        raise LayershearError(f"--resume and --restart apply to --metric accuracy (the journal), not {metric}")
    if resume and not journal.is_file():
        raise LayershearError(f"--resume: no journal {journal} of an earlier run into --out {out}; drop --resume")
    # everything that can fail fast fails before the search
    check_target(out, overwrite, sources=[model] if Path(model).is_dir() else [])
    parse_size(max_shard_size)
    budget = parse_budget(search_budget)
    if push_repo:
        from layershear.export.hub import check_push

        check_push(push_repo)
    # one run at a time writes --out and its journal (rank 0 of a torchrun group writes both)
    with output_lock(out) if is_main() else contextlib.nullcontext(), _resume_hint(journal):
        if restart and is_main():
            journal.unlink(missing_ok=True)
        with reporting() as on_event:
            run = prune_model(model, calib=calib_spec, ratio=ratio, num_remove=num_remove, metric=metric,
                              search=search or ("greedy" if beam_width == 1 else "beam"), beam_width=beam_width,
                              search_budget=budget, astar=AStarSettings(admissible=admissible),
                              evolve=EvolveSettings(seed=search_seed),
                              iterative=iterative, acc_norm=acc_norm, engine=engine, compile_blocks=compile_blocks,
                              eval=eval_spec, race=RaceSettings(delta=race_delta, slices=race_slices, bound=race_bound)
                              if race else None,
                              batch_size=batch_size, max_length=max_length, add_bos=add_bos, dtype=dtype, device=device,
                              revision=revision, trust_remote_code=trust_remote_code, data=data_of(source, data_dir, num_fewshot),
                              command=command_line(), journal=journal, placement=placement, on_event=on_event)
        if run.search is not None:
            OUT.print(steps_table(run.search))
        if run.held_out is not None:
            OUT.print(eval_table({"base": run.held_out.base, "pruned": run.held_out.pruned},
                                 title=f"Held-out evaluation ({run.held_out.suite})"))
        if not is_main():
            return                 # rank 0 writes the model
        with ERR.status(f"exporting to {out}"):
            run.save_pretrained(out, overwrite=overwrite, max_shard_size=max_shard_size)
        if "journal" in run.cost:              # a journal this run used (accuracy search) is done with
            journal.unlink(missing_ok=True)
    ERR.print(f"wrote {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))", markup=False)
    if push_repo:
        ERR.print(f"pushed: {run.push_to_hub(push_repo, private=private)}", markup=False)


@contextlib.contextmanager
def _resume_hint(journal: Path):
    """On an interruption (Ctrl-C, SIGTERM: also one that a C extension re-raised as another error),
    say how much the journal keeps and that the same command resumes; the error propagates."""
    from layershear.cli.options import RECEIVED
    from layershear.cli.render import ERR
    from layershear.errors import JournalError
    from layershear.search.journal import summarize

    try:
        yield
    except BaseException as e:
        try:
            done = summarize(journal) if isinstance(e, KeyboardInterrupt) or RECEIVED else None
        except (JournalError, OSError):
            done = None              # a damaged journal: the interruption is what to report
        if done is not None and done.models:
            ERR.print(f"the journal {journal} keeps {done.steps} complete steps and {done.models} scored models; "
                      "run the same command again to resume", markup=False)
        raise
