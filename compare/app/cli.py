"""The `compare` command line.

Each command imports the application module it runs when it runs (the deliberate lazy imports
listed in ARCHITECTURE.md), so that `compare list` or `compare games` does not load norse,
sinabs or rliable (torch it does: the run store reads checkpoints with it), and a
subprocess-heavy sweep does not pay for them per cell.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from compare.core.errors import UsageError
from compare.core.registry import DEFAULT_METHOD, registered
from compare.core.seeding import MAX_SEED

DEFAULT_RESULTS = Path("results")


def _progress(total: int):
    from tqdm import tqdm

    # miniters=1: tqdm checks the clock at every update, so after a fast warm-up its rate (and ETA)
    # follows the training phase's speed within seconds instead of waiting out its dynamic interval.
    return tqdm(total=total, unit="step", unit_scale=True, dynamic_ncols=True, mininterval=1.0, miniters=1,
                file=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compare", prog_name="compare", message="%(prog)s %(version)s")
def cli():
    """Compare direct-trained, converted and hybrid spiking RL agents on one harness."""


@cli.command()
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help="Method to train (`compare methods`).")
@click.option("--game", default="CartPole-v1", show_default=True,
              help="Atari game (Pong, ALE/Pong-v5), classic control (CartPole-v1) or MinAtar/<Game>.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0, max=MAX_SEED))
@click.option("--steps", type=click.IntRange(min=1),
              help="Agent steps to train [default: the environment's budget; Atari: the protocol's].")
@click.option("--protocol", "protocol_name", default="nature", show_default=True,
              help="Evaluation protocol preset: nature, chen2022, machado, atari100k; youngtian2019 (MinAtar only).")
@click.option("--preset", help="A paper's settings: each method's are listed by `compare methods` "
              "[default: the learner's preset for the environment family, the same for every method].")
@click.option("--label", help="Name this variant in `compare table` (letters, digits, spaces, _.,:=+()-).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one hyperparameter, protocol field or method option (repeatable).")
@click.option("--eval-episodes", type=click.IntRange(min=1), help="Shorthand for --set eval_episodes=N.")
@click.option("--arch", help="dqn: network, default or speck (an Atari network that maps onto a Speck chip).")
@click.option("--timesteps", metavar="T[,T...]",
              help="Simulation time steps of a spiking method (dsqn: one T; convert: a list to sweep).")
@click.option("--source", type=click.Path(path_type=Path),
              help="convert: the finished dqn run to convert (it is only read).")
@click.option("--percentile", help="convert: normalization percentile in (0, 100] [default: 99.9].")
@click.option("--readout", help="convert: membrane, rate or robust [default: membrane].")
@click.option("--calibration-frames", help="convert: observations for normalization [default: 15000].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1, max=os.cpu_count() or 1),
              help="torch intra-op threads, at most this machine's CPUs, saved in config.json [default: 1 for MinAtar and classic control, "
              "min(4, CPUs) for Atari]; give concurrent runs a share of the cores each.")
@click.option("--track", type=click.Choice(["tensorboard", "wandb"]), default="tensorboard", show_default=True,
              help="TensorBoard event files are always written; wandb also mirrors them to Weights & Biases.")
@click.option("--wandb-project", help="--track wandb: project [default: WANDB_PROJECT or wandb's].")
@click.option("--wandb-entity", help="--track wandb: entity [default: WANDB_ENTITY or yours].")
@click.option("--wandb-group", help="--track wandb: group (a sweep passes its id).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS,
              show_default=True, help="Results root; the run directory is created under OUT/runs/.")
@click.option("--name", help="Run directory name under OUT/runs [default: game__method__seedS__time-id].")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue a killed run from its last checkpoint (other options are ignored).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(method, game, seed, steps, protocol_name, preset, label, overrides, eval_episodes, arch, timesteps,
        source, percentile, readout, calibration_frames, device, threads, track, wandb_project, wandb_entity,
        wandb_group, out, name, resume_dir, quiet):
    """Train one agent (or convert one, `--method convert`) and evaluate it under the protocol;
    prints the final score."""
    from compare.app import api
    from compare.app.resolve import parse_overrides
    from compare.core.envs import resolve_env
    from compare.core.registry import get_method

    progress = None if quiet else _progress
    if resume_dir is not None:
        run_ = api.resume(resume_dir, progress_factory=progress)
    else:
        if get_method(method).source_method is not None:
            context = click.get_current_context()
            for param, flag in (("game", "--game"), ("seed", "--seed"), ("steps", "--steps"),
                                ("protocol_name", "--protocol")):
                if context.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE:
                    raise UsageError(f"{flag}: --method {method} takes the game, seed, budget and protocol of "
                                     "its --source run; drop it")
        pairs = parse_overrides(overrides)
        for key, value in (("eval_episodes", eval_episodes), ("arch", arch), ("timesteps", timesteps),
                           ("percentile", percentile), ("readout", readout),
                           ("calibration_frames", calibration_frames)):
            if value is not None:
                pairs[key] = str(value)
        wandb = ({"project": wandb_project, "entity": wandb_entity, "group": wandb_group}
                 if track == "wandb" else None)
        settings = api.resolve(method, game, seed, steps, protocol_name, preset, pairs, source, label, device,
                               threads, wandb)
        if not quiet:
            preset = f", preset {settings.preset}" if settings.preset else ""
            if settings.source:  # a derived run trains nothing: name its source, not the source's budget
                work = f"from {settings.source}"
            else:
                frameskip = resolve_env(settings.game).frameskip
                frames = f" ({settings.total_steps * frameskip:,} frames)" if frameskip > 1 else ""
                work = f"{settings.total_steps:,} agent steps{frames}"
            click.echo(f"run: {settings.method} on {settings.game}, seed {settings.seed}, {work}{preset}, protocol "
                       f"{settings.protocol.name}, device {settings.device}, "
                       f"{settings.threads} thread{'s' if settings.threads > 1 else ''}", err=True)
        run_ = api.start(settings, out, name, progress)
    _print_result(run_.path, run_.read_eval())


def _score(result: dict) -> str:
    """An evaluation's score with what its spread is: the SD of the episode returns."""
    return (f"mean return {result['mean_return']:.2f} (SD {result['std_return']:.2f} over "
            f"{result['episodes']} episodes)")


def _print_result(path: Path, result: dict) -> None:
    for entry in result.get("sweep", []):
        validation = (f"  validation {entry['validation_mean_return']:.2f}"
                      if "validation_mean_return" in entry else "")
        click.echo(f"  T={entry['timesteps']:<5} mean return {entry['mean_return']:.2f}{validation}  conformance "
                   f"{entry['conformance']:.3f}  mean |Q error| {entry['mean_abs_q_error']:.3f}")
    if "selected_timesteps" in result:
        how = {"validation": "chosen on the validation episodes", "only": "the only T"}[result["selection"]]
        click.echo(f"reported T={result['selected_timesteps']} ({how}; source ANN: {result['ann_mean_return']:.2f})")
    hns = f", HNS {result['hns']:.3f}" if result.get("hns") is not None else ""
    click.echo(f"{result['method']} {result['game']} seed {result['seed']}: {_score(result)}{hns}")
    click.echo(f"run directory: {path}")


@cli.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--episodes", type=click.IntRange(min=1), help="[default: the run's protocol]")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=None,
              help="Evaluation seed [default: the run's seed].")
@click.option("--attack", type=click.Choice(["fgsm"]), help="Perturb every observation (stored in robustness.json).")
@click.option("--eps", help="--attack: perturbation sizes [default: 0.001,0.005,0.01].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--video", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.gif",
              help="Instead: play one episode and write it as an animated GIF (Atari, MinAtar, CartPole-v1).")
def eval_(run_dir, episodes, seed, attack, eps, device, video):
    """Evaluate a finished run's trained network again under its protocol (does not modify it),
    or under an FGSM attack (adds the scores to the run's robustness.json), or draw one episode."""
    from compare.app import api

    if eps is not None and attack is None:
        raise UsageError("--eps sizes an attack: add --attack fgsm (or leave --eps out)")
    if video is not None:
        if attack is not None or episodes is not None:
            raise UsageError("--video draws one clean episode: leave out --attack and --episodes")
        from compare.app.video import record_video

        played = record_video(run_dir, video, seed)
        click.echo(f"{played['method']} {played['game']}: one episode (seed stream 'video' of seed {played['seed']}), "
                   f"return {played['return']:g} in {played['decisions']} decisions; {played['frames']} frames "
                   f"written to {played['path']}")
        return
    if attack == "fgsm":
        from compare.app.robustness import parse_eps

        if device == "cuda":  # honoured or refused, never dropped
            raise UsageError("--attack fgsm runs on the CPU (compare/app/robustness.py); --device cuda cannot be "
                             "honoured: drop it or use --device cpu")

        eps = eps or "0.001,0.005,0.01"
        entry = api.attack(run_dir, parse_eps(eps), episodes, seed)
        click.echo(f"FGSM ({entry['attack']}; eps in {entry['eps_unit']}):")
        for value in parse_eps(eps):
            r = entry["results"][f"{value:g}"]
            click.echo(f"  eps={value:<8g} {_score(r)}")
        return
    result = api.evaluate(run_dir, episodes, seed, device)
    click.echo(f"{result['method']} {result['game']}: {_score(result)}")
    click.echo(f"(episodes of the seed stream 'reevaluation' of seed {result['seed'] if seed is None else seed}: "
               "not the run's own final evaluation, whose score eval.json keeps)")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True, help="speck2f, speck2e, dynapcnn or nir.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to create (must not exist, or be empty).")
@click.option("--timesteps", type=click.IntRange(min=1),
              help="T per decision [default: the convert run's best T; 32 for a dqn run].")
@click.option("--eval-episodes", type=click.IntRange(min=1),
              help="Chip targets: episodes for each evaluation [default: the run's protocol].")
@click.option("--calibration-frames", type=click.IntRange(min=1),
              help="Chip targets from a dqn run: frames for normalization [default: 15000].")
def export(run_dir, target, out, timesteps, eval_episodes, calibration_frames):
    """Export a run for neuromorphic hardware: a Speck / DYNAP-CNN deployment (resource report,
    discretized model, chip config when samna is installed) or a NIR graph."""
    from compare.app import api

    record = api.export(run_dir, target, out, timesteps, eval_episodes, calibration_frames,
                        echo=lambda line: click.echo(line, err=True))
    if target != "nir":
        click.echo((out / "resources.txt").read_text(), nl=False)
        f, d = record["float_snn"], record["discretized_snn"]
        click.echo(f"T={record['timesteps']}: float chip SNN {f['mean_return']:.2f}, discretized "
                   f"{d['mean_return']:.2f} (conformance with float {d['conformance']:.3f}); source run "
                   f"{record['source_mean_return']:.2f}")
        click.echo(f"chip configuration {record['chip_config']}")
    click.echo(f"exported to {out}")


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _read_for_report(results: Path, games, methods, timesteps: str = "selected"):
    """Finished runs for table/plot; prints what was read and what was skipped (stderr)."""
    from compare.app.table import parse_operating_point, read_runs, summary_lines

    records, skipped = read_runs(results, _names(games), _names(methods), parse_operating_point(timesteps))
    if not records:
        raise UsageError(f"no usable finished runs under {results}/runs" +
                         (" for these filters" if games or methods else "") +
                         (f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""))
    return records, summary_lines(records, skipped)


def _say(lines: list[str]) -> None:
    """What a report read and skipped (stderr), printed once its input is known to be good."""
    for line in lines:
        click.echo(line, err=True)


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "json"]), default="md", show_default=True)
@click.option("--games", help="Comma-separated games to include [default: all].")
@click.option("--methods", help="Comma-separated methods to include [default: all].")
@click.option("--normalize", "unit", type=click.Choice(["auto", "raw", "hns", "normalized"]), default="auto",
              show_default=True, help="Raw returns, human-normalized (Atari), or normalized by each game's "
              "reference (Atari: human; MinAtar, classic control: a published DQN); auto: hns when every game "
              "is Atari, normalized when a table has several games that all have a reference, else raw "
              "(then no IQM across games).")
@click.option("--reference-scores", "reference_file", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV replacing the shipped MinAtar/classic-control references (columns: game, random, "
              "reference, reference_name, source).")
@click.option("--score", "kind", type=click.Choice(["final", "best-eval", "train-ma100"]), default="final",
              show_default=True, help="final: the final evaluation; best-eval: the best periodic evaluation (Chen et "
              "al. 2022's reporting, optimistic); train-ma100: mean of the last 100 training-episode returns (Young "
              "& Tian 2019's statistic, a training statistic).")
@click.option("--energy", type=click.Choice(["per-step", "once"]), default="per-step", show_default=True,
              help="First-layer energy convention of SNNs: charged at every time step, or once per decision.")
@click.option("--energy-model", type=click.Choice(["default", "compute", "compute+neurons", "memory"]),
              default="default", show_default=True, help="Energy model (compare.core.energy): compute only, + "
              "neuron updates, + memory traffic (Lemaire et al. 2022); default: memory beside compute.")
@click.option("--timesteps", default="selected", show_default=True, metavar="selected|best-test|N",
              help="convert runs: the T chosen on validation episodes, the best T on the reported test "
              "episodes (optimistic), or the sweep entry at T=N.")
@click.option("--at-step", type=click.IntRange(min=1), metavar="N",
              help="--score train-ma100: read the statistic at agent step N instead of at the budget (e.g. a "
              "published figure's 250k).")
@click.option("--reference", is_flag=True, help="Add published random, human and Nature DQN 2015 scores.")
@click.option("--robustness", is_flag=True, help="Also show FGSM scores stored by `compare eval --attack`.")
def table(results, fmt, games, methods, unit, reference_file, kind, energy, energy_model, timesteps, at_step, reference,
          robustness):
    """The methods side by side: one table per protocol and budget, one column per method variant,
    with aggregate rows and, under each table, what the intervals allow to conclude."""
    import json as _json

    from compare.app.table import build_tables, parse_operating_point, render, robustness_rows, table_rows
    from compare.core.scores import read_references

    parse_operating_point(timesteps)  # bad input before any run is read
    references = read_references(reference_file) if reference_file else None
    records, summary = _read_for_report(results, games, methods, timesteps)
    tables = build_tables(records, unit, kind, energy, reference, robustness, references, at_step, energy_model)
    _say(summary)
    if fmt == "json":
        click.echo(_json.dumps(tables, indent=2))
        return
    for t in tables:
        parts = [table_rows(t)] + ([robustness_rows(t)] if robustness else [])
        for i, (header, rows) in enumerate(parts):
            title = "; ".join([t["group"], t["conventions"], *t["notes"]]) + (
                ": FGSM, mean return at each eps" if i else "")
            if fmt == "csv":  # one CSV: the group is a column
                header, rows = ["group", *header], [[title, *row] for row in rows]
                if i or t is not tables[0]:
                    header = None
            else:
                click.echo(f"\n{title}\n" if fmt == "md" else f"% {title}")
            click.echo(render(header, rows, fmt), nl=False)
        if fmt != "csv" and t["verdicts"]:  # csv stays data only; json carries them too
            prefix = "" if fmt == "md" else "% "
            click.echo(("\n" if fmt == "md" else "") + "\n".join(prefix + line for line in t["verdicts"].values()))


@cli.command()
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/plots"),
              show_default=True)
@click.option("--games", help="Comma-separated games to include [default: all].")
@click.option("--methods", help="Comma-separated methods to include [default: all].")
@click.option("--score", "kind", type=click.Choice(["final", "best-eval"]), default="final", show_default=True,
              help="Score of the score-vs-energy figure (as in `compare table`).")
@click.option("--energy", type=click.Choice(["per-step", "once"]), default="per-step", show_default=True,
              help="First-layer energy convention (as in `compare table`).")
@click.option("--energy-model", type=click.Choice(["compute", "compute+neurons", "memory"]), default="memory",
              show_default=True, help="Energy model of the score-vs-energy figure (as in `compare table`).")
@click.option("--reference-scores", "reference_file", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV replacing the shipped MinAtar/classic-control references (as in `compare table`).")
@click.option("--curve", type=click.Choice(["episode", "train-ma100"]), default="episode", show_default=True,
              help="Learning curves: binned training-episode returns, or the 100-episode moving average (Young & "
              "Tian 2019's statistic; their published points are drawn on youngtian2019 runs).")
@click.option("--activity", "activity_run", type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR",
              help="Instead: one evaluation episode of this finished spiking run (spike rasters, firing-rate "
              "histograms, the output over T) as activity__<run>.png.")
def plot(results, out, games, methods, kind, energy, energy_model, reference_file, curve, activity_run):
    """PNG figures: learning curves, converted score and conformance against T, performance
    profiles, sample efficiency (IQM against steps), score against energy per decision. Figures
    that cannot be drawn are listed with the reason (stderr)."""
    from compare.app.plots import activity_plot, write_plots
    from compare.core.scores import read_references

    if activity_run is not None:
        click.echo(str(activity_plot(activity_run, out)))
        return

    references = read_references(reference_file) if reference_file else None
    records, summary = _read_for_report(results, games, methods)
    _say(summary)
    written, skipped = write_plots(records, out, kind, energy, references, curve, energy_model)
    for path in written:
        click.echo(str(path))
    for line in skipped:
        click.echo(f"not drawn: {line}", err=True)


@cli.command()
@click.argument("sweep_file", required=False, type=click.Path(path_type=Path))
@click.option("--games", help="Comma-separated games, e.g. Pong,Breakout.")
@click.option("--methods", help="Comma-separated methods, e.g. dqn,dsqn,convert.")
@click.option("--seeds", help="Seed range: 0-4, or a list: 0,2,5.")
@click.option("--steps", type=int, help="Agent steps per training cell [default: each environment's budget].")
@click.option("--protocol", help="Evaluation protocol [default: nature].")
@click.option("--preset", "presets", metavar="NAME[,NAME...]",
              help="Preset for every cell whose method has it (e.g. nature: dqn and dsqn alike) "
              "[default: each learner's family preset, shared by its methods].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Setting for every cell whose method has it (repeatable).")
@click.option("--launcher", help="local (default), ray or slurm.")
@click.option("--workers", type=int, help="Cells at once [default: 1].")
@click.option("--results", help="Results root [default: results].")
@click.option("--ray-address", help="ray: address of a running cluster [default: start a local one].")
@click.option("--cpus-per-run", type=float, help="ray/slurm: CPUs per cell [default: 1].")
@click.option("--gpus-per-run", type=float, help="ray/slurm: GPUs per cell [default: 0].")
@click.option("--slurm-cluster", type=click.Choice(["slurm", "local"]),
              help="slurm: 'local' runs the job array with submitit's local executor.")
@click.option("--slurm-time", "slurm_time_min", type=int, metavar="MINUTES",
              help="slurm: each job's time limit; a cell cut off resumes when the sweep is rerun [default: 1440].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Every training cell's --device; cuda: a cell never falls back to the CPU [default: auto].")
@click.option("--track", type=click.Choice(["tensorboard", "wandb"]),
              help="wandb: every training cell also logs to W&B, grouped as sweep-<id> [default: tensorboard].")
@click.option("--dry-run", is_flag=True, help="Print the cells, their order and the steps; run nothing.")
def sweep(sweep_file, games, methods, seeds, steps, protocol, presets, overrides, launcher, workers, results,
          ray_address, cpus_per_run, gpus_per_run, slurm_cluster, slurm_time_min, device, track, dry_run):
    """Run games x methods x seeds as ordinary runs; rerun the same command to finish an
    interrupted sweep (finished cells are skipped, interrupted ones resumed)."""
    from compare.app.sweep import dry_run as print_plan
    from compare.app.sweep import from_toml, make_spec, run_sweep

    options = {"games": games, "methods": methods, "seeds": seeds, "steps": steps, "protocol": protocol,
               "presets": presets, "launcher": launcher, "workers": workers, "results": results,
               "ray_address": ray_address,
               "cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run, "slurm_cluster": slurm_cluster,
               "slurm_time_min": slurm_time_min, "device": device, "track": track}
    if overrides:
        options["overrides"] = overrides
    if sweep_file is not None:
        spec = from_toml(sweep_file, **options)
    else:
        if not games or not methods or not seeds:
            raise UsageError("compare sweep needs --games, --methods and --seeds (or a sweep.toml)")
        spec = make_spec(**{k: v for k, v in options.items() if v is not None})
    if dry_run:
        print_plan(spec, click.echo)
        return
    summary = run_sweep(spec, click.echo)
    elsewhere = f", {len(summary['elsewhere'])} running elsewhere" if summary["elsewhere"] else ""
    click.echo(f"sweep {spec.sweep_id}: {len(summary['done'])} done, {len(summary['skipped'])} skipped "
               f"(finished earlier), {len(summary['failed'])} failed{elsewhere}")
    for cell, error in summary["failed"]:
        click.echo(f"  failed: {cell.label}: {error}")
    if summary["failed"]:
        sys.exit(1)


@cli.command("list")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS,
              show_default=True)
def list_(results):
    """List the runs found under RESULTS/runs, one line each."""
    from compare.core.runstore import list_runs, read_jsonl

    runs = list_runs(results)
    if not runs:
        click.echo(f"no runs under {results}/runs")
        return
    for r in runs:
        try:
            cfg = r.config
            header = (f"{r.path.name}  {cfg['method']:<8} {cfg['game']:<16} seed {cfg['seed']:<3} "
                      f"{cfg['protocol']['name']:<9}")
            if r.finished:
                res = r.read_eval()
                status = f"finished  mean_return {float(res['mean_return']):.2f} ({res['episodes']} ep)"
            else:
                last = read_jsonl(r.path / "metrics.jsonl")
                status = f"unfinished at step {last[-1]['step'] if last else 0}/{cfg['total_steps']}"
        except (UsageError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
            click.echo(f"{r.path.name}  skipped: unreadable config.json or eval.json ({type(e).__name__})")
            continue
        click.echo(f"{header} {status}")


@cli.command()
def games():
    """List every environment name `--game` accepts."""
    from compare.core.envs import all_env_names

    for name in all_env_names():
        click.echo(name)


@cli.command()
def methods():
    """List the installed methods: what each is, its presets, its ANN baseline and its export targets."""
    from compare.core.registry import get_method

    for name in registered():
        method = get_method(name)
        click.echo(f"{name:<8} {method.description}")
        details = [f"presets: {', '.join(method.preset_names) or '-'}", f"ANN baseline: {'itself' if method.baseline == name else method.baseline}"]
        if method.source_method is not None:
            details.append(f"from a finished {method.source_method} run")
        if method.exports:
            details.append(f"export: {', '.join(method.exports)}")
        click.echo(f"{'':<8} {'; '.join(details)}")


@cli.command()
@click.option("--game", default="Breakout", show_default=True)
@click.option("--env-steps", default=4000, show_default=True, type=click.IntRange(min=100),
              help="Agent steps per environment measurement.")
@click.option("--train-steps", default=2000, show_default=True, type=click.IntRange(min=100),
              help="Agent steps of DQN training to time (after a 1000-step warm-up).")
@click.option("--concurrent-steps", default=10_000, show_default=True, type=click.IntRange(min=500),
              help="(e): agent steps of each CartPole run, alone and side by side.")
@click.option("--ppo-rollouts", default=3, show_default=True, type=click.IntRange(min=1),
              help="(g): PPO rollouts of 8 x 128 steps (and their updates) to time, after one more.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="(a), (b), (f), (j): alternated rounds of each measure; the median is reported.")
@click.option("--decisions", default=1_000, show_default=True, type=click.IntRange(min=10),
              help="(j): decisions of each network per round, one observation at a time.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cpu: the measurements (a)-(j) above; cuda: the GPU check (dqn, dsqn and ppo training "
                   "steps/s on Breakout, one seed twice, a killed run resumed; docs/performance.md).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="--device cuda: a new folder for the check's runs and gpu_check.json [default: a temporary one].")
def bench(game, env_steps, train_steps, concurrent_steps, ppo_rollouts, rounds, decisions, device, out):
    """Measure harness and learner speed against baselines run in this same process (on a GPU:
    the prepared GPU check)."""
    context = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in ("game", "env_steps", "train_steps", "concurrent_steps",
                                                         "ppo_rollouts", "rounds", "decisions", "out")
             if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if device == "cpu":
        if "--out" in given:
            raise UsageError("--out is the GPU check's (--device cuda); the CPU measurements write nothing")
        from compare.bench import run_benchmarks

        run_benchmarks(game, env_steps, train_steps, echo=click.echo, concurrent_steps=concurrent_steps,
                       ppo_rollouts=ppo_rollouts, rounds=rounds, decisions=decisions)
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here (torch.cuda.is_available() is false); "
                         "the CPU measurements are --device cpu")
    if [flag for flag in given if flag != "--out"]:
        raise UsageError(f"{', '.join(flag for flag in given if flag != '--out')}: the GPU check's runs have fixed "
                         "sizes; with --device cuda give only --out")
    from compare.gpu_check import gpu_check

    with tempfile.TemporaryDirectory() as tmp:
        if not gpu_check("cuda", out or Path(tmp) / "gpu-check", echo=click.echo):
            sys.exit(1)


@cli.command("reference-loop")
@click.option("--game", default="MinAtar/Breakout", show_default=True, help="A MinAtar game.")
@click.option("--frames", default=250_000, show_default=True, type=click.IntRange(min=1),
              help="Frames (= agent steps) per run; their script's NUM_FRAMES is 5M.")
@click.option("--seeds", default="0-2", show_default=True, help="Runs: a seed range, 0-2, or a list, 0,2,5.")
@click.option("--at", "at_text", default="100000,150000,200000,250000", show_default=True, metavar="N[,N...]",
              help="Frame counts at which to report their statistic.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for each run's returns (a run already there is read back, not rerun).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1, max=os.cpu_count() or 1),
              help="torch threads (their reruns here used one).")
def reference_loop(game, frames, seeds, at_text, out, threads):
    """Young & Tian 2019's DQN loop (MinAtar examples/dqn.py), written out: train it and print
    their statistic (mean of the last 100 training-episode returns) per run, as a CSV row per
    frame count with the mean and standard error over runs."""
    import torch

    from compare.app.reference_loop import run_reference_loop
    from compare.app.sweep import parse_seeds
    from compare.core.envs import resolve_env

    try:
        at = tuple(int(v) for v in at_text.split(","))
    except ValueError:
        raise UsageError(f"--at {at_text!r} is not a list of frame counts; use e.g. 100000,250000") from None
    if not at or min(at) < 1:
        raise UsageError(f"--at {at_text!r}: frame counts are positive integers")
    spec = resolve_env(game)
    torch.set_num_threads(threads)
    rows = run_reference_loop(spec, frames, parse_seeds(seeds), out, at, echo=click.echo)
    n = max(len(row["runs"]) for row in rows)
    click.echo("game,frames," + ",".join(f"run{i + 1}" for i in range(n)) + ",mean,standard_error")
    for row in rows:
        click.echo(f"{row['game']},{row['frames']}," + ",".join(f"{v:.2f}" for v in row["runs"])
                   + f",{row['mean']:.2f},{row['standard_error']:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="compare", standalone_mode=False)
    except UsageError as e:
        click.echo(f"compare: error: {e}", err=True)
        sys.exit(2)
    except click.ClickException as e:  # usage errors, bad option values, unreadable paths
        click.echo(f"compare: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("compare: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
