"""lineage-report's study plan against today's config: a planned job done under an earlier
config (its config hash is not today's) is listed as stale, since ``lineage-train
experiment=<study>`` would run it again. A real tiny study in a temporary MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, TINY

from lineage.report.summary import PlannedRun, footer_lines, stale_runs

STUDIES = Path(__file__).resolve().parent / "fixtures" / "report"  # experiment/tiny_study.yaml
# tests/test_sweeps.py's tiny study with its corpus in the study file, as a real study has it (a
# corpus given on the command line is in the runs' overrides tag: another row than the plan's)
TINY_STUDY = (
    (STUDIES / "experiment" / "tiny_study.yaml")
    .read_text()
    .replace(
        "study: tiny-study\n",
        "defaults:\n  - override /corpus: text_files\nstudy: tiny-study\ncorpus:\n  files:\n"
        + "".join(f"    {s}: {TINY / f'{s}.txt'}\n" for s in ("train", "valid", "test")),
    )
)


def _train(root: Path, config_dir: Path) -> subprocess.CompletedProcess:
    """``lineage-train experiment=tiny_study``: 4 jobs (rule, uniform × seeds 0, 1)."""
    env = {**os.environ, "LINEAGE_CACHE_DIR": str(root / "cache"), "LINEAGE_OFFLINE": "1"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "lineage.train", "--config-dir", str(config_dir)]
    cmd += ["experiment=tiny_study", f"paths.root_dir={root}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _study_dir(root: Path, name: str, text: str) -> Path:
    """A config dir holding ``experiment/tiny_study.yaml`` as ``text``."""
    (root / name / "experiment").mkdir(parents=True)
    (root / name / "experiment" / "tiny_study.yaml").write_text(text)
    return root / name


def _report(root: Path, config_dir: Path, monkeypatch, capsys) -> tuple[dict, str, str]:
    """``lineage-report experiment=tiny_study`` in-process: (provenance.json, table.md's Runs
    line, stdout)."""
    from lineage.report.summary import main

    argv = ["lineage-report", "--config-dir", str(config_dir), "experiment=tiny_study"]
    argv += [f"paths.root_dir={root}", "log_to_mlflow=false"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    tables = root / "experiments" / "tiny_study" / "tables"
    prov = json.loads((tables / "provenance.json").read_text())
    runs = next(x for x in (tables / "table.md").read_text().splitlines() if x.startswith("- Runs"))
    return prov, runs, capsys.readouterr().out


def test_runs_made_under_an_earlier_config_are_stale(tmp_path, monkeypatch, capsys):
    """Run the study, report: complete and current. Change a setting that moves every job's
    config hash: the same runs are done but stale (and the study command does rerun them, after
    which none is). A study whose jobs do not compose is reported, the check said not made."""
    monkeypatch.chdir(tmp_path)
    assert "override /corpus: text_files" in TINY_STUDY
    study = _study_dir(tmp_path, "study", TINY_STUDY)
    done = _train(tmp_path, study)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    prov, runs, out = _report(tmp_path, study, monkeypatch, capsys)
    assert prov["planned_runs"] == 4 and prov["missing_runs"] == []
    assert prov["stale_runs"] == [] and prov["stale_not_checked"] is None
    assert runs.endswith("; 4 of the 4 runs the study plans.")
    assert "earlier config" not in out

    changed = TINY_STUDY.replace("enable_progress_bar: false", "deterministic: true")
    assert changed != TINY_STUDY
    config_dir = _study_dir(tmp_path, "changed", changed)
    prov, runs, out = _report(tmp_path, config_dir, monkeypatch, capsys)
    assert prov["missing_runs"] == []
    assert prov["stale_runs"] == ["rule s0", "rule s1", "uniform s0", "uniform s1"]
    assert runs.endswith(
        "; 4 of the 4 runs the study plans; 4 of them under an earlier config (their config "
        "hash is not today's: `lineage-train experiment=tiny_study` reruns them)."
    )
    assert (
        "Under an earlier config (their config hash is not today's: `lineage-train "
        "experiment=tiny_study` reruns them): 4 of the 4 finished planned runs (rule s0, rule s1, "
        "uniform s0, uniform s1)." in out
    )
    # what the report said: the study command runs all four again, and then none is stale
    rerun = _train(tmp_path, config_dir)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert "skipped, run" not in rerun.stdout + rerun.stderr
    prov, runs, _ = _report(tmp_path, config_dir, monkeypatch, capsys)
    assert prov["runs_in_csv"] == 8 and prov["stale_runs"] == []

    broken = _study_dir(tmp_path, "broken", changed + "no_such_key: 1\n")
    prov, runs, out = _report(tmp_path, broken, monkeypatch, capsys)
    reason = "composing rule s0's config failed: In 'experiment/tiny_study': ConfigKeyError "
    reason += "raised while composing config: Key 'no_such_key' not in 'TrainConfig'"
    assert prov["stale_runs"] == [] and prov["stale_not_checked"] == reason
    assert runs.endswith(
        f"; 4 of the 4 runs the study plans (not checked against today's config: {reason})."
    )
    assert f"Not checked against today's config: {reason}." in out


def test_stale_runs_compare_todays_hashes_with_each_planned_jobs_rows():
    plan = [PlannedRun("ngram", s) for s in "0123"] + [PlannedRun("rule", "0")]
    hashes = {p: [f"{p.model}{p.seed}", f"{p.model}{p.seed}-earlier"] for p in plan}

    def row(seed, chash, **extra):
        return {"tags.model": "ngram", "tags.seed": seed, "tags.config_hash": chash, **extra}

    rows = [
        row("0", "old"),
        row("0", "ngram0"),  # one of its rows is today's: skipped, not stale
        row("1", "ngram1-earlier"),  # the earlier form of the hash, which the skip accepts too
        row("2", "ngram2+other"),  # a fit continued from another config: neither config's run
        row("2", "ngram2", parent_run_id="x"),  # a fine-tuning child run, not the job
        row("3", "ngram0"),  # another job's hash
        row("3", "ngram3", **{"tags.overrides": "model.lm.order=2"}),  # another row's run
    ]
    assert stale_runs(plan, rows, hashes) == [plan[2], plan[3]]  # rule s0: not done, not stale


def test_the_footer_says_how_many_are_stale_or_that_it_was_not_checked():
    prov = {
        "study": "s", "study_file": "conf/experiment/s_file.yaml", "command": "c",
        "generated": "d", "generated_from": "f", "runs_in_table": 3, "runs_in_csv": 3,
        "superseded": 0, "git_shas": {}, "git_dirty_runs": 0, "lineage_versions": [],
        "datasets": {}, "config_hashes": {}, "planned_runs": 4, "missing_runs": ["a s1"],
        "stale_runs": ["a s0", "b s0"], "stale_not_checked": None,
    }  # fmt: skip
    assert footer_lines(prov)[0] == (
        "Runs: 3 runs in the table (3 in runs.csv, 0 superseded); 3 of the 4 runs the study "
        "plans; 2 of them under an earlier config (their config hash is not today's: "
        "`lineage-train experiment=s_file` reruns them)."
    )
    prov.update(stale_runs=[], stale_not_checked="why")
    assert footer_lines(prov)[0].endswith(
        "3 of the 4 runs the study plans (not checked against today's config: why)."
    )
    prov.update(stale_not_checked=None)
    assert footer_lines(prov)[0].endswith("; 3 of the 4 runs the study plans.")


def test_todays_hashes_are_those_of_each_job_composed_alone():
    """One composition per model and swept setting, the seed set on it, gives every job the
    hashes its own composition gives (swept settings and corpus, a config reading ${seed})."""
    from hydra import compose, initialize_config_dir

    from lineage.report.summary import CONF_DIR, planned_runs, todays_hashes
    from lineage.tracking import config_hashes

    swept = {"model": "ngram", "model.lm.order": "2,5", "seed": "0,1", "corpus": "lee,ptb"}
    found = todays_hashes("lineage_lee", swept, planned_runs(swept, None))
    seeded = {"model": "glove", "seed": "0,1"}  # glove's shuffle: seed: ${seed}
    found |= todays_hashes("lineage_lee", seeded, planned_runs(seeded, None))
    assert len(found) == 10
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for job in found:
            overrides = ["experiment=lineage_lee", f"model={job.model}", f"seed={job.seed}"]
            overrides += [f"{k}={v}" for k, v in job.settings]
            assert found[job] == config_hashes(compose("train", overrides=overrides)), job
    assert len({hashes[0] for hashes in found.values()}) == 10
