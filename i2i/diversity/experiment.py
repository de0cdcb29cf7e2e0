"""Running a diversity experiment: train (or resume, or reuse) each variant, sample it, report.

Everything is kept in the experiment folder ``output_dir/name/``: each variant's ordinary run
directory under ``variants/``, one JSON result per (variant, sampler) beside it, the real-pair
reference, and the report. Rerunning the same command continues where it stopped: finished
variants are not retrained and finished measurements are not redone: a result is reused only when
its stored key still matches the model's weights, the data, every metric's and sampler's full
settings and the protocol (see :mod:`i2i.diversity.cache`). A variant folder is never deleted:
without ``checkpoints/latest.pt`` the variant continues from its newest readable ``epoch_N.pt`` (a
snapshot: its networks, with fresh optimisers, as the trainer's note says), or the experiment stops
and says what the folder holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from i2i.assembly.build import DATA_HOST_KEYS, build_dataset, build_generator, build_metrics, pick_device
from i2i.assembly.host import PluginHost
from i2i.diversity.cache import KEY_VERSION, component_settings, data_fingerprint, model_fingerprint, usable
from i2i.diversity.config import Experiment, Variant
from i2i.diversity.measures import pairwise_measures, real_reference
from i2i.diversity.protocol import Inputs, measure, protocol_record
from i2i.diversity.report import write_figure, write_report
from i2i.errors import CheckpointError, I2IError
from i2i.inference.loading import generator_from_checkpoint
from i2i.metrics import tell_device
from i2i.reports.run_report import write_index
from i2i.runs.checkpoint import load_checkpoint, snapshots, step_snapshot_name
from i2i.sampling import Sampler
from i2i.training.resume import changed_on_resume
from i2i.training.start import start_run

REFERENCE = "reference.json"
#: What a result file and the reference must hold to be reused (besides a matching key).
RESULT_FIELDS = {
    "variant": str,
    "label": str,
    "sampler": str,
    "sampler_description": str,
    "mode": str,
    "step": int,
    "summary": dict,
    "per_input": list,
}
REFERENCE_FIELDS = {"values": dict, "pairs": int, "images": int, "groups": int, "group_size": int}


class ExperimentStopped(Exception):
    """Training of a variant was stopped (Ctrl-C, SIGTERM) after saving its checkpoint."""

    def __init__(self, variant: str, step: int) -> None:
        super().__init__(f"variant {variant} stopped at step {step}")
        self.variant = variant
        self.step = step


@dataclass
class SamplerSpec:
    """One sampler of a variant, built from its recipe entry."""

    name: str
    sampler: Sampler


def _build_samplers(variant: Variant, host: PluginHost) -> list[SamplerSpec]:
    specs = []
    for entry in variant.samplers:
        params = {k: v for k, v in entry.items() if k != "name"}
        sampler = host.registry("sampler").build(entry["name"], **params)
        if not isinstance(sampler, Sampler):
            raise I2IError(f"The sampler {entry['name']!r} did not build an i2i.Sampler.")
        specs.append(SamplerSpec(entry["name"], sampler))
    return specs


def _read_cache(path: Path) -> tuple[Any, str | None]:
    """A cache file's content (None if there is none), and why it cannot be read if it cannot."""
    if not path.exists():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"it is not readable JSON ({str(exc).splitlines()[0]})"


def _describe_folder(folder: Path, limit: int = 12) -> str:
    """What a folder holds, as relative paths (the first ``limit`` of them)."""
    found = sorted(
        str(p.relative_to(folder)) + ("/" if p.is_dir() else "")
        for p in folder.rglob("*")
        if p.name != ".lock"
    )
    if not found:
        return "nothing"
    more = f", ... ({len(found) - limit} more)" if len(found) > limit else ""
    return ", ".join(found[:limit]) + more


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


class DiversityExperiment:
    """One experiment: its inputs, measures and variants, and where everything is written."""

    def __init__(
        self,
        experiment: Experiment,
        host: PluginHost,
        *,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        self.exp = experiment
        self.host = host
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.settings = experiment.settings
        self.root = experiment.root
        self.device = pick_device(experiment.base["experiment"]["device"])
        # Everything that can fail without training comes first: metrics (LPIPS weights), data,
        # and whether each sampler can diversify its variant's generator.
        self.measures = pairwise_measures(build_metrics(self.settings["metrics"], host))
        self.quality = build_metrics(self.settings["quality"], host)
        tell_device([*(m.metric for m in self.measures), *self.quality.values()], self.device)
        self.dataset = build_dataset(experiment.base, host, self.settings["split"])
        if len(self.dataset) == 0:
            raise I2IError(f"The {self.settings['split']!r} split holds no images to sample.")
        self.samplers = {v.name: _build_samplers(v, host) for v in experiment.variants}
        self._check_samplers()
        self.protocol = protocol_record(
            self.settings, min(self.settings["inputs"], len(self.dataset)), self.settings["split"]
        )
        data = data_fingerprint(experiment.base["data"], DATA_HOST_KEYS, self.settings["split"], self.dataset)
        metrics = [component_settings(host, "metric", m) for m in self.settings["metrics"]]
        #: What every cached number depends on besides the model and the sampler (i2i.diversity.cache).
        self.cache_key = {
            "version": KEY_VERSION,
            "protocol": self.protocol,
            "data": data,
            "metrics": metrics,
            "quality": [component_settings(host, "metric", m) for m in self.settings["quality"]],
            "device": self.device.type,
            "figure": [self.settings["figure_inputs"], self.settings["figure_samples"]],
        }
        protocol = {k: self.protocol[k] for k in ("inputs", "samples", "seed", "split", "pairing")}
        self.reference_key = {"version": KEY_VERSION, "protocol": protocol, "data": data, "metrics": metrics}

    # -- set-up ----------------------------------------------------------------------------------
    def _check_samplers(self) -> None:
        probe = self.dataset[0]
        input_nc, output_nc = probe["A"].shape[0], probe["B"].shape[0]
        problems = []
        for variant in self.exp.variants:
            G = build_generator(variant.recipe, self.host, input_nc, output_nc)
            for spec in self.samplers[variant.name]:
                try:
                    spec.sampler.check(G)
                except I2IError as exc:
                    problems.append(f"variant {variant.name}, sampler {spec.name}: {exc}")
        if problems:
            listing = "\n".join(f"  - {p}" for p in problems)
            raise I2IError(f"{self.exp.path}: these samplers cannot diversify their variant:\n{listing}")

    def _inputs(self) -> Inputs:
        count = self.protocol["inputs"]
        items = [self.dataset[i] for i in range(count)]
        if any("B" not in item for item in items):
            raise I2IError("The diversity experiment needs targets; this dataset has inputs only.")
        return Inputs(
            torch.stack([it["A"] for it in items]),
            torch.stack([it["B"] for it in items]),
            [str(it["name"]) for it in items],
        )

    def _note_unusable(self, path: Path, why: str) -> None:
        self.console.print(
            f"[yellow]Note: {path} cannot be used as a cached result ({why}); it is measured again "
            "and the file rewritten.[/yellow]",
            soft_wrap=True,
        )

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.show_progress,
        )

    # -- the real-pair reference -----------------------------------------------------------------
    def reference(self) -> dict[str, Any]:
        path = self.root / REFERENCE
        key = self.reference_key
        cached, unreadable = _read_cache(path)
        reuse, malformed = usable(cached, key, REFERENCE_FIELDS)
        if reuse:
            return cached
        if unreadable or malformed:
            self._note_unusable(path, unreadable or malformed)
        with self._progress() as bar:
            task = bar.add_task("real-pair reference: loading targets", total=len(self.dataset))
            targets = []
            for i in range(len(self.dataset)):
                targets.append(self.dataset[i]["B"])
                bar.advance(task)
        from i2i.data.imaging import to_unit

        stack = to_unit(torch.stack(targets))
        count, samples = self.protocol["inputs"], self.settings["samples"]
        result = real_reference(
            stack,
            self.measures,
            pairs=count * (samples - 1),
            group=samples,
            groups=count,
            seed=self.settings["seed"],
        )
        payload = {"protocol": key["protocol"], **result, "cache_key": key}
        _write_json(path, payload)
        return payload

    # -- variants --------------------------------------------------------------------------------
    def model_path(self, variant: Variant) -> Path:
        """Train the variant if needed (resuming an interrupted run) and return its checkpoint."""
        if variant.source:
            return Path(variant.source)
        run_dir = Path(variant.recipe["experiment"]["output_dir"]) / variant.name
        latest = run_dir / "checkpoints" / "latest.pt"
        if run_dir.exists() and not latest.is_file():
            self._restore_latest(variant, run_dir, latest)
        if latest.is_file():
            stored = load_checkpoint(latest, mmap=True)
            changed = changed_on_resume(stored["recipe"], variant.recipe, self.host)
            if changed:
                raise I2IError(
                    f"Variant {variant.name}: the model in {run_dir} was trained with other "
                    f"[{'], ['.join(changed)}] settings than the recipe now asks for. Move {run_dir} "
                    "away (or delete it) to train it again, or restore the recipe."
                )
            del stored
        trainer = start_run(
            variant.recipe,
            self.host,
            resume_dir=run_dir if latest.is_file() else None,
            console=self.console,
            show_progress=self.show_progress,
        )
        if trainer.step >= trainer.total_steps():
            trainer.release()  # finished earlier: nothing to train, let the directory go
        else:
            self.console.print(
                f"[bold]Training variant {variant.name}[/bold] ({variant.label}): "
                f"{trainer.total_steps()} steps, from step {trainer.step}, in {run_dir}"
            )
            result = trainer.run()
            write_index(run_dir)
            if result.interrupted:
                raise ExperimentStopped(variant.name, result.step)
        return latest

    def _restore_latest(self, variant: Variant, run_dir: Path, latest: Path) -> None:
        """A variant folder without ``latest.pt``: continue from its newest readable epoch
        snapshot (copied to ``latest.pt``; nothing is deleted), or stop and say what is there."""
        snapshots = []
        unreadable = []
        for path in sorted((run_dir / "checkpoints").glob("epoch_*.pt")):
            try:
                snapshots.append((int(load_checkpoint(path, mmap=True).get("step", 0)), path))
            except CheckpointError:
                unreadable.append(path.name)
        skipped = f" ({', '.join(unreadable)} cannot be read)" if unreadable else ""
        if not snapshots:
            raise I2IError(
                f"Variant {variant.name}: its folder {run_dir} has no checkpoints/latest.pt and no "
                f"readable epoch_N.pt to continue from{skipped}; it holds: {_describe_folder(run_dir)}. "
                "i2i does not delete what it did not just create: to train the variant from the start, "
                f"move {run_dir} away (or delete it); to continue its training, put its checkpoint "
                f"back as {latest}."
            )
        step, newest = max(snapshots)
        tmp = latest.with_name(f".{latest.name}.restore.tmp")
        shutil.copyfile(newest, tmp)
        os.replace(tmp, latest)
        self.console.print(
            f"[yellow]Variant {variant.name}: {latest} was missing; continuing from {newest.name} "
            f"(step {step}), copied to latest.pt{skipped}. Nothing in {run_dir} was removed.[/yellow]",
            soft_wrap=True,
        )

    def checkpoints_to_measure(self, variant: Variant, final: Path) -> list[tuple[Path, bool]]:
        """``(checkpoint, is_final)`` for each step of ``variant.steps`` before its last, then the
        final checkpoint. A step is found in the snapshot its training kept for it
        (``train.snapshot_steps``), or in an epoch snapshot taken at that step."""
        if not variant.steps:
            return [(final, True)]
        last = int(load_checkpoint(final, mmap=True).get("step", 0))
        folder = final.parent
        earlier = [step for step in variant.steps if step < last]
        found = {step: folder / step_snapshot_name(step) for step in earlier}
        if not all(path.is_file() for path in found.values()):
            for _, path in snapshots(folder):
                with contextlib.suppress(CheckpointError):
                    step = int(load_checkpoint(path, mmap=True).get("step", -1))
                    if step in found and not found[step].is_file():
                        found[step] = path
        missing = [step for step, path in found.items() if not path.is_file()]
        beyond = [step for step in variant.steps if step > last]
        if missing or beyond:
            why = []
            if missing:
                why.append(f"no snapshot of steps {missing} in {folder} (step_NNNNNNN.pt or epoch_NNNN.pt)")
            if beyond:
                why.append(f"steps {beyond} lie beyond the {last} steps it trained")
            raise I2IError(
                f"Variant {variant.name} cannot be measured at every step its recipe lists: "
                f"{'; '.join(why)}. Snapshots are kept only while the variant trains with those steps "
                f"in its recipe: move {folder.parent} away to train it again, or remove the steps."
            )
        return [*((found[step], False) for step in earlier), (final, True)]

    def result_path(self, variant: Variant, spec: SamplerSpec, step: int | None = None) -> Path:
        """The cached result of a sampler on the final model, or (``step``) on an earlier snapshot."""
        at = "" if step is None else f"__step{step}"
        return self.root / "results" / f"{variant.name}__{spec.name}{at}.json"

    def figure_path(self, variant: Variant, spec: SamplerSpec, step: int | None = None) -> Path:
        at = "" if step is None else f"__step{step}"
        return self.root / "figures" / f"{variant.name}__{spec.name}{at}.png"

    def measure_variant(
        self, variant: Variant, checkpoint: Path, inputs: Inputs, final: bool = True
    ) -> list[dict[str, Any]]:
        specs = self.samplers[variant.name]
        state = load_checkpoint(checkpoint)
        step = int(state.get("step", 0))
        at = None if final else step
        model = model_fingerprint(state)
        # What the variant's place in the experiment is: not measured, so never taken from a cache.
        place = {"label": variant.label, "group": variant.group, "seed": variant.seed, "final": final}
        results = []
        for spec, entry in zip(specs, variant.samplers, strict=True):
            path = self.result_path(variant, spec, at)
            sampler = component_settings(self.host, "sampler", entry)
            key = {**self.cache_key, "model": model, "sampler": sampler}
            cached, unreadable = _read_cache(path)
            reuse, malformed = usable(cached, key, RESULT_FIELDS)
            if reuse and self.figure_path(variant, spec, at).is_file():
                results.append({**cached, **place})
                continue
            if unreadable or malformed:
                self._note_unusable(path, unreadable or malformed)
            G = generator_from_checkpoint(state, self.host, self.device)
            with self._progress() as bar:
                where = "" if final else f" at step {step}"
                task = bar.add_task(
                    f"sampling {variant.name}{where} with {spec.name}", total=len(inputs.names)
                )
                outcome = measure(
                    G,
                    spec.sampler,
                    inputs,
                    self.settings,
                    self.measures,
                    self.quality,
                    self.device,
                    figure_inputs=self.settings["figure_inputs"],
                    figure_samples=self.settings["figure_samples"],
                    advance=lambda task=task: bar.advance(task),
                )
            write_figure(outcome["figure"], self.figure_path(variant, spec, at))
            record = {
                "variant": variant.name,
                **place,
                "sampler": spec.name,
                "sampler_description": spec.sampler.describe(),
                "mode": spec.sampler.mode,
                "checkpoint": str(checkpoint),
                "step": step,
                "protocol": self.protocol,
                "summary": outcome["summary"],
                "per_input": outcome["per_input"],
                "cache_key": key,
            }
            _write_json(path, record)
            results.append(record)
        return results

    def run(self) -> Path:
        """The whole experiment; returns the report's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "experiment.toml").write_text(
            self.exp.path.read_text(encoding="utf-8"), encoding="utf-8"
        )
        reference = self.reference()
        inputs = self._inputs()
        results = []
        for variant in self.exp.variants:
            final = self.model_path(variant)
            for checkpoint, is_final in self.checkpoints_to_measure(variant, final):
                results += self.measure_variant(variant, checkpoint, inputs, is_final)
        return write_report(self.root, self.exp, self.protocol, reference, results, self.measures)
