"""``lineage-train``: the Hydra app that trains and scores one family on one corpus.

One job = one MLflow run: prepare the corpus (cached), build the family with the corpus
vocabulary, then ``Trainer.fit`` (skipped for families with nothing to learn), ``validate`` and
``test``, and log metrics, cost, samples and the resolved config. Sweeps are Hydra multiruns:

    lineage-train model=ngram corpus=ptb corpus.data_dir=/data/ptb
    lineage-train -m model=rule,ngram seed=1,2
"""

from __future__ import annotations

import json
import logging
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import lineage.config  # noqa: F401  (registers the train schema before Hydra composes)
from lineage.config import unknown_group_options

# An absolute path: as a console script, Hydra would resolve "../conf" as a Python module.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

log = logging.getLogger("lineage")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _quiet_libraries() -> None:
    """One line per event: Lightning prints through its own handler, so stop the duplicate that
    Hydra's root handler would add; drop advertising tips and a known upstream deprecation."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.propagate = False
        for handler in logger.handlers:
            handler.addFilter(_DropTips())
    logging.getLogger("gensim").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # a resume restores the best score itself (BestCheckpoint), which this warning denies
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # small corpora (the demo's) have fewer batches than steps between logs: epochs log anyway
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller")


STAGES = ("fit", "validate", "test")


def _hydra_choice(group: str, default: str) -> str:
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group, default))
    return default


def _sweep_tags() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN":
        return {}
    return {"sweep_id": Path(hc.sweep.dir).name, "sweep_job": str(hc.job.num)}


# Command-line overrides that choose the row's identity (model, corpus, seed, tasks) or say where
# things are and how the run looks: not part of a run's ``overrides`` tag. The files of a
# text_files corpus or a csv task are what the run read, so they stay (the registered sources'
# data_dir does not: their files are checked by sha256). ``stages`` stays: a run that only scores
# a checkpoint is not the row of the run that trained it.
_IDENTITY_OR_PLACE = re.compile(
    r"^~?\+{0,2}("
    r"seed|model|corpus|task|experiment|study|force|ckpt_path|samples(\..*)?|tags(\..*)?"
    r"|paths(\..*)?|tracking(\..*)?|hydra(/.*|\..*)?"
    r"|corpus\.(data_dir|cache_dir|offline|name)|task\.[^.=]+\.(data_dir|offline)"
    r"|trainer\.(enable_progress_bar|enable_model_summary|log_every_n_steps)"
    r")="
)


def variant_overrides(overrides: Sequence[str]) -> str:
    """The overrides that change what a run computes beyond its model, corpus and seed, without
    Hydra's ``+``/``++`` (how a key was added, not what it is), sorted and space-joined
    (``model.lm.order=2``): a sweep's points are separate table rows."""
    kept = {o.lstrip("+") for o in overrides if not _IDENTITY_OR_PLACE.match(o)}
    return " ".join(sorted(kept))


def _overrides_tag(cfg: DictConfig) -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    variant = variant_overrides(_changing_overrides(cfg, list(HydraConfig.get().overrides.task)))
    return {"overrides": variant} if variant else {}


def _changing_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """``overrides`` without the settings ``cfg`` would have without them (``model.lm.order=5``
    where 5 is the default): they name no variant, so the run is the default's row.

    Composes the config again without the variant overrides; kept whenever the comparison
    cannot be made (a key the default lacks, a deletion, a composition that fails)."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    variant = [o for o in overrides if not _IDENTITY_OR_PLACE.match(o)]
    if not variant:
        return overrides
    try:
        base = compose(
            config_name=HydraConfig.get().job.config_name,
            overrides=[o for o in overrides if o not in variant],
        )
        parsed = OverridesParser.create().parse_overrides(variant)
    except Exception:
        log.debug("overrides tag: the default config could not be composed", exc_info=True)
        return overrides
    dropped = set()
    for text, override in zip(variant, parsed, strict=True):
        key = override.key_or_group.replace("/", ".")
        if override.is_delete() or OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            continue
        try:
            same = _plain(OmegaConf.select(cfg, key)) == _plain(OmegaConf.select(base, key))
        except Exception:
            continue
        if same:
            dropped.add(text)
    return [o for o in overrides if o not in dropped]


_ABSENT = object()


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(tempfile.mkdtemp(prefix="lineage-"))


def _validate_stages(stages: Sequence[str]) -> list[str]:
    from lineage.data.sources import DataError

    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise DataError(
            f"stages={list(stages)}: "
            + (f"unknown stage(s) {unknown}" if unknown else "nothing to run")
            + f"; use a list of {', '.join(STAGES)} (e.g. stages=[validate,test])"
        )
    return list(stages)


# Trainer settings a family decides (trainer_overrides), which a user's trainer.<key> would
# otherwise lose without a word; a gradient family reads them from its model config.
FAMILY_TRAINER_KEYS = ("max_epochs", "max_time", "gradient_clip_val")


def _check_trainer_settings(trainer_cfg: DictConfig, model_cfg: DictConfig, model) -> None:
    """A ``trainer.<key>`` the family sets to another value is an error naming the key to use
    (``model.max_epochs``), not a setting silently replaced."""
    from lineage.data.sources import DataError

    family = model.trainer_overrides()
    for key in FAMILY_TRAINER_KEYS:
        given = trainer_cfg.get(key)
        if given is None or key not in family or given == family[key]:
            continue
        if key in model_cfg:
            raise DataError(
                f"trainer.{key}={given}: the {model.family} family takes {key} from "
                f"model.{key} ({family[key]} now); set model.{key}={given} instead"
            )
        raise DataError(
            f"trainer.{key}={given}: the {model.family} family sets {key}={family[key]} "
            f"itself; leave trainer.{key} unset"
        )


def _check_trainer_builds(trainer_cfg: DictConfig, model, out_dir: Path) -> None:
    """Lightning checks ``accelerator``, ``precision``, ``devices`` … when a Trainer is built,
    and the run's Trainer is built inside the MLflow run (it carries the run's logger): one
    built here first, without logger or callbacks, turns a bad value into a one-line error
    before the run opens instead of a FAILED run in the study."""
    from hydra.errors import InstantiationException

    from lineage.data.sources import DataError

    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # its device summary is printed by the real one
    try:
        instantiate(
            trainer_cfg,
            **{
                **model.trainer_overrides(),
                "logger": False,
                "callbacks": [],
                "enable_checkpointing": False,
                "default_root_dir": str(out_dir),
            },
        )
    except InstantiationException as err:
        cause = err.__cause__ or err
        unknown = "not a Trainer setting; " if isinstance(cause, TypeError) else ""
        raise DataError(
            f"trainer: {cause} ({unknown}`lineage-train <your overrides> --cfg job` shows the "
            "trainer.* settings)"
        ) from err
    finally:
        lightning_log.setLevel(level)


def _check_samples(samples: DictConfig) -> None:
    """``samples.*`` are used after the test: a bad one is refused before anything runs."""
    from lineage.data.sources import DataError

    if samples.count < 0 or samples.max_new_tokens < 1:
        raise DataError(
            f"samples.count={samples.count}, samples.max_new_tokens={samples.max_new_tokens}: "
            "use count >= 0 (0: no samples) and max_new_tokens >= 1"
        )
    if samples.temperature < 0:
        raise DataError(f"samples.temperature={samples.temperature}: use >= 0 (0: greedy)")
    if samples.top_k is not None and samples.top_k < 1:
        raise DataError(f"samples.top_k={samples.top_k}: use >= 1, or null for no cut-off")


def _read_checkpoint(ckpt_path: str, vocab: Sequence[str], fit: bool = True) -> dict | None:
    """The checkpoint file ``ckpt_path`` (None for a name Lightning resolves itself with
    ``fit``: ``last`` …), refused unless its vocabulary is the corpus's: the same ids would
    score other words."""
    import torch

    from lineage.data.sources import DataError

    if fit and ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    if not Path(ckpt_path).is_file():
        raise DataError(
            f"ckpt_path={ckpt_path}: no such checkpoint file; give the path of a Lightning "
            "checkpoint (the run's checkpoints/last.ckpt or best.ckpt) or drop ckpt_path"
        )
    try:  # a file the user names, loaded as Lightning loads it
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = (checkpoint.get("hyper_parameters") or {}).get("vocab")
    except Exception as err:
        raise DataError(
            f"ckpt_path={ckpt_path}: not a Lightning checkpoint ({type(err).__name__}: {err})"
        ) from err
    if saved is not None and list(saved) != list(vocab):
        i = next((i for i, (a, b) in enumerate(zip(saved, vocab, strict=False)) if a != b), None)
        where = (
            f"id {i} is {saved[i]!r} there, {vocab[i]!r} here"
            if i is not None
            else f"{len(saved)} types there, {len(vocab)} here"
        )
        raise DataError(
            f"ckpt_path={ckpt_path}: the checkpoint's vocabulary is not this corpus's ({where}); "
            "a checkpoint scores or continues only with the corpus settings it was trained with"
        )
    return checkpoint


def _load_checkpoint_weights(model, checkpoint: dict, ckpt_path: str) -> None:
    """Without ``fit``, ``ckpt_path`` is the model to score (valid, test and tasks): its weights,
    and a family's own state through ``on_load_checkpoint``, are loaded as Lightning's
    ``validate(ckpt_path=...)`` would, before anything is scored."""
    from lineage.data.sources import DataError

    try:
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as err:
        raise DataError(
            f"ckpt_path={ckpt_path}: not a checkpoint of this model ({type(err).__name__}: "
            f"{err}); give a checkpoint written by a run of the same model and corpus"
        ) from err


SCORED_SPLITS = ("val", "test")
# The cost of a fit, measured by the runner (the others come from the family's cost()).
FIT_COST = ("cost/train_seconds", "cost/train_tokens_per_sec", "cost/train_flops_per_sec")


def data_statistics(datamodule) -> dict[str, float]:
    """The data module's statistics under their metric names (design.md §4).

    ``{split}/tokens`` of the scored splits is the number of targets the family scored (logged
    by the scoring path); the split's own count of targets is ``{split}/data_tokens``, so that
    neither hides the other in MLflow or results.json (a family scoring too few or too many
    targets shows as ``{split}/tokens != {split}/data_tokens``). ``train/tokens`` keeps its name:
    no train split is scored.
    """
    stats = dict(datamodule.stats())
    for split in SCORED_SPLITS:
        if f"{split}/tokens" in stats:
            stats[f"{split}/data_tokens"] = stats.pop(f"{split}/tokens")
    return stats


def run(cfg: DictConfig, callbacks: Sequence = ()) -> dict[str, float]:
    """Run one job; returns the final metrics (also logged to MLflow when tracking is on).

    Args:
        cfg: the composed ``train`` config.
        callbacks: extra Lightning callbacks (added to the trainer's own).
    """
    import lightning as L

    from lineage import __version__
    from lineage.interface import Capability, FitMode
    from lineage.modules.base import ResumeState
    from lineage.tracking import (
        changed_inputs,
        config_hash,
        config_hashes,
        find_finished,
        fit_hash,
        flatten,
        git_info,
        mlflow_run,
        resolved,
    )

    stages = _validate_stages(cfg.stages)
    _check_samples(cfg.samples)
    from lineage.data.sources import DataError

    if not 0 <= cfg.seed <= 2**32 - 1:  # numpy's range, which Lightning seeds too
        raise DataError(f"seed={cfg.seed}: use a whole number from 0 to 4294967295")
    if not str(cfg.study).strip():
        raise DataError("study='': name the study (study=<name>) or leave it out (lineage-default)")
    _quiet_libraries()
    L.seed_everything(cfg.seed, workers=True)
    model_name = _hydra_choice("model", str(cfg.model.get("_target_", "model")).split(".")[-1])
    corpus_name = str(cfg.corpus.name)
    run_name = f"{model_name}-{corpus_name}-s{cfg.seed}"
    out_dir = _output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)

    user_tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    tags = {
        "study": str(cfg.study),
        "model": model_name,
        "corpus": corpus_name,
        "seed": str(cfg.seed),
        "tasks": ",".join(["perplexity", *(cfg.get("task") or {})]),
        "config_hash": config_hash(cfg),
        "fit_hash": fit_hash(cfg),
        "lineage_version": __version__,
        **git_info(),
        **_sweep_tags(),
        **_overrides_tag(cfg),
    }
    reserved = sorted(set(user_tags) & {*tags, "family", "era", "year", "adaptation"})
    if reserved:
        raise DataError(
            f"tags.{reserved[0]}: a tag lineage sets itself (it identifies the run); "
            "choose another name"
        )
    tags.update(user_tags)
    if not cfg.get("force", False):
        # A study may run some families with fewer seeds (tracking.only_seeds: {model: [seeds]}).
        planned = (cfg.tracking.get("only_seeds") or {}).get(model_name)
        if planned is not None and cfg.seed not in planned:
            log.info(
                "%s: skipped, the study runs %s with seeds %s only "
                "(tracking.only_seeds; force=true runs it)",
                run_name,
                model_name,
                list(planned),
            )
            return {}
        same = {"model": model_name, "corpus": corpus_name, "seed": str(cfg.seed)}
        done = find_finished(cfg.tracking, config_hashes(cfg), same)
        changed = changed_inputs(cfg.tracking, done["run_id"]) if done is not None else []
        if changed:
            log.info(
                "%s: run %s FINISHED this config, but %s changed since: running it again",
                run_name,
                done["run_id"],
                ", ".join(changed),
            )
        elif done is not None:
            log.info(
                "%s: skipped, run %s already FINISHED this config (force=true reruns)",
                run_name,
                done["run_id"],
            )
            return done["metrics"]
    # The data, the model and every setting are checked before the MLflow run opens: a bad value
    # or a missing file is a one-line error, not a FAILED run in the study.
    datamodule = instantiate(cfg.corpus)
    datamodule.prepare_data()
    datamodule.setup()
    model = instantiate(cfg.model, vocab=datamodule.vocab.itos)
    _check_trainer_settings(cfg.trainer, cfg.model, model)
    _check_trainer_builds(cfg.trainer, model, out_dir)
    datamodule.set_batching(model.batching())
    task_data = None
    if cfg.get("task"):  # a bad task setting or file fails here, not after the fit
        from lineage.tasks import check_task_settings

        task_data = check_task_settings(cfg.task, model)
    if cfg.get("ckpt_path"):
        checkpoint = _read_checkpoint(str(cfg.ckpt_path), datamodule.vocab.itos, "fit" in stages)
        if "fit" not in stages:
            _load_checkpoint_weights(model, checkpoint, str(cfg.ckpt_path))
    elif "fit" not in stages and model.fit_mode != FitMode.NONE:
        raise DataError(
            f"stages={stages}: without fit, {model_name} would be scored untrained; give the "
            "model to score (ckpt_path=<its run's checkpoints/best.ckpt>) or add fit"
        )
    tags.update({"family": model.family, "era": model.era, "year": str(model.year)})
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    # Under DDP Lightning re-launches this job once per extra process: only rank 0 tracks.
    tracking = cfg.tracking if rank_zero_only.rank == 0 else {"enabled": False}
    with mlflow_run(tracking, run_name, tags) as tracker, ExitStack() as stack:
        if tracker is not None:
            tracker.log_params(flatten(resolved(cfg)))
            tracker.log_text(OmegaConf.to_yaml(resolved(cfg)), "config.yaml")
            hydra_dir = out_dir / ".hydra"
            if hydra_dir.is_dir():
                tracker.log_artifact(hydra_dir, ".hydra")

        if tracker is not None:
            tracker.log_metrics(data_statistics(datamodule))
            tracker.log_datasets(corpus_name, datamodule.describe())
            if cfg.get("ckpt_path") and "fit" not in stages:  # the model scored is an input:
                from lineage.data.sources import sha256_file  # replaced, the config is stale

                scored = Path(str(cfg.ckpt_path)).absolute()
                tracker.log_datasets(
                    "checkpoint", {"model": {"uri": str(scored), "digest": sha256_file(scored)}}
                )
            batching = model.batching()
            if batching.mode == "window":  # evaluation windows: each target scored once
                tracker.log_params(
                    {
                        "eval.window": str(batching.seq_len),
                        "eval.stride": str(batching.seq_len - batching.min_context),
                    }
                )
        log.info(
            "%s: %s (%s) on %s, vocabulary %d",
            run_name,
            model.family,
            model.citation,
            corpus_name,
            datamodule.vocab_size,
        )

        trainer_kwargs = {
            "logger": tracker.lightning_logger() if tracker is not None else False,
            "callbacks": [
                *callbacks,
                ResumeState(cfg.seed)
                if tracker is None
                else ResumeState(
                    cfg.seed,
                    tracker.run_id,
                    on_resume=lambda run_id, step: tracker.take_over(run_id, step, fit_hash(cfg)),
                ),
            ],
            "default_root_dir": str(out_dir),
            **model.trainer_overrides(),
        }
        trainer = instantiate(cfg.trainer, **trainer_kwargs)

        results: dict[str, float] = {}
        validated_in_fit = False
        train_seconds = 0.0
        if "fit" in stages and model.fit_mode != FitMode.NONE:
            start = time.perf_counter()
            try:  # Lightning answers Ctrl-C (or a callback's KeyboardInterrupt) with exit(1)
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            except SystemExit:
                if trainer.interrupted:
                    _say_interrupted(run_name, tracker, out_dir)
                raise
            train_seconds = time.perf_counter() - start
            if trainer.interrupted:
                _say_interrupted(run_name, tracker, out_dir)
                raise KeyboardInterrupt(f"{run_name}: training was interrupted")
            validated_in_fit = "val/ppl" in trainer.callback_metrics
            # tokens this process trained on (partial epochs and resumed runs included); count
            # families make one pass over the train split per epoch
            trained = getattr(model, "trained_tokens", None)
            if trained is not None:
                trained *= trainer.world_size  # every rank trains on its share of each batch
            else:
                trained = datamodule.stats().get("train/tokens", 0.0) * trainer.current_epoch
            # a resumed run's training time includes the fit before the checkpoint; the rate is
            # this process's own
            results["cost/train_seconds"] = train_seconds + getattr(
                model, "prior_train_seconds", 0.0
            )
            results["cost/train_tokens_per_sec"] = (
                trained / train_seconds if train_seconds > 0 else 0.0
            )
        ckpt = None  # test scores the best-on-valid weights of a gradient fit (design.md §3.4)
        # (fast_dev_run keeps no checkpoint: its smoke test scores the weights it has)
        if model.fit_mode == FitMode.GRADIENT and "fit" in stages and not trainer.fast_dev_run:
            # the path itself, not "best": the module's first ModelCheckpoint monitors val/ppl,
            # and naming its file spares Lightning's warning about several callbacks
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            ckpt = best or "best"
        scores = Capability.LOG_PROB in model.capabilities  # else perplexity is "—"
        # validate again when test scores the best checkpoint: valid and test of the same weights
        if scores and "validate" in stages and (not validated_in_fit or ckpt is not None):
            trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        if scores and "test" in stages:
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        results.update(data_statistics(datamodule))
        results.update(model.eval_results)  # `{split}/tokens`: the targets actually scored

        if cfg.get("task"):  # downstream tasks (conf/task/), scored for every family
            from lineage.tasks import evaluate_tasks

            results.update(
                evaluate_tasks(
                    cfg.task, model, datamodule, tracker, out_dir, cfg.seed, task_data, cfg.trainer
                )
            )

        cost = {f"cost/{k}": v for k, v in model.cost().items()}
        cost["cost/peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.update(cost)
        if "cost/train_flops_per_token" in results and "cost/train_tokens_per_sec" in results:
            # achieved training FLOP/s: the family's FLOPs per token at the rate trained (all ranks)
            results["cost/train_flops_per_sec"] = (
                results["cost/train_flops_per_token"] * results["cost/train_tokens_per_sec"]
            )
        results = dict(sorted(results.items()))

        samples = ""
        if "generate" in model.capabilities and cfg.samples.count > 0:
            texts = model.sample_texts(
                cfg.samples.count,
                cfg.samples.max_new_tokens,
                temperature=cfg.samples.temperature,
                top_k=cfg.samples.top_k,
                seed=cfg.seed,
            )
            samples = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts)) + "\n"
            (out_dir / "samples.txt").write_text(samples)

        summary = {
            "run_name": run_name,
            "family": model.family,
            "model": model_name,
            "corpus": corpus_name,
            "results": results,
            "data": datamodule.describe(),
            "tags": tags,
            "config": resolved(cfg),
        }
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

        model_ckpt = None
        if cfg.tracking.get("enabled", True) and cfg.tracking.get("log_model", False):
            # on every rank: under DDP, saving a checkpoint is a collective (a barrier); in a
            # temporary folder: the artifact is the copy kept (neural fits also keep best/last)
            model_ckpt = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "model.ckpt"
            trainer.save_checkpoint(model_ckpt)
        if tracker is not None:
            tracker.log_metrics(cost, step=trainer.global_step)
            fit_cost = {k: results[k] for k in FIT_COST if k in results}
            if fit_cost:
                tracker.log_metrics(fit_cost, step=trainer.global_step)
            tracker.log_artifact(out_dir / "results.json")
            if samples:
                tracker.log_artifact(out_dir / "samples.txt")
            if model_ckpt is not None:
                tracker.log_artifact(model_ckpt, "model")
        where = f"outputs in {out_dir}"
        if tracker is not None:
            where = f"MLflow run {tracker.run_id}; {where}"
    log.info("%s: %s (%s)", run_name, _one_line(results), where)
    return results


def _say_interrupted(run_name: str, tracker, out_dir: Path) -> None:
    """What an interrupted fit leaves: a FAILED run, and the checkpoint that continues it."""
    last = out_dir / "checkpoints" / "last.ckpt"
    log.warning(
        "%s: training interrupted%s; %s",
        run_name,
        f", MLflow run {tracker.run_id} marked FAILED" if tracker is not None else "",
        f"continue it with the same command and ckpt_path={last}"
        if last.is_file()
        else "no checkpoint to continue from: the same command starts it again",
    )


def _one_line(results: dict[str, float]) -> str:
    keys = ("val/ppl", "test/ppl", "cost/train_seconds")
    return ", ".join(f"{k}={results[k]:.2f}" for k in keys if k in results)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        results = run(cfg)
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        print(f"lineage-train: {message}", file=sys.stderr)  # bad input: says what to fix
        raise SystemExit(2) from None
    return results.get("val/ppl")


def user_error(err: BaseException) -> str | None:
    """The message of a user's mistake in ``err`` or what caused it (Hydra's instantiate wraps
    what a constructor raised), or None for a bug, whose traceback is kept.

    A ``ValueError`` that a config's constructor raised is a setting it refuses (its message
    names the key), a ``TypeError`` for an unexpected keyword a key it does not have (added with
    ``+``); ``HYDRA_FULL_ERROR=1`` keeps their tracebacks instead.
    """
    import os

    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    from lineage.data.sources import DataError

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, DataError):
            return str(cause)
        refused = isinstance(cause, InstantiationException) and isinstance(
            cause.__cause__, ValueError
        )
        if refused and os.environ.get("HYDRA_FULL_ERROR") != "1":
            return str(cause.__cause__)
        unknown_key = (
            isinstance(cause, InstantiationException)
            and isinstance(cause.__cause__, TypeError)
            and "unexpected keyword argument" in str(cause.__cause__)
        )
        if unknown_key and os.environ.get("HYDRA_FULL_ERROR") != "1":  # a key added with +
            return (
                f"{cause.__cause__}: not a setting of this config; `lineage-train <your "
                "overrides> --cfg job` lists the keys it has"
            )
        if isinstance(cause, MissingMandatoryValue):  # a ??? the command line did not fill
            key = getattr(cause, "full_key", None) or "a mandatory setting"
            return f"{key} has no value; set it on the command line ({key}=...)"
        cause = cause.__cause__
    return None


def main() -> None:
    """Console entry point ``lineage-train``."""
    message = unknown_group_options(sys.argv[1:], CONF_DIR)
    if message is not None:
        print(f"lineage-train: {message}", file=sys.stderr)
        raise SystemExit(2)
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
