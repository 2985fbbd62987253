"""The exhaustive fit check: every configuration run for real, smallest memory first, until a
tier holds one that meets the targets. What `bench` drives across models and engines, and
what the predicted fit check (`fitting.predicted`) is measured against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from model_store.fitting import tiers
from model_store.fitting.load import Upload, request_plan, with_storage
from model_store.fitting.runs import BASELINE_MB, MARGIN, WHOLE_CORE, Run, run_settled

TIERS_MB = (128, 256, 512)
# Tried only when none of TIERS_MB fits: where a model that needs more (TensorFlow) lands.
LARGER_TIERS_MB = (1024,)


def explore(
    function: str,
    model_dir: str | Path,
    plan: list[Upload],
    engine: str = "litert",
    storage_url: str | None = None,
    log_dir: Path | None = None,
    memory_tiers: tuple[int, ...] = (*TIERS_MB, *LARGER_TIERS_MB),
    on_run: Callable[[Run], None] = lambda run: None,
    cpus: tuple[float, ...] | None = None,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> tuple[list[Run], dict[float, Run]]:
    """The whole-core run, then memory tiers from the smallest up, each at its default vCPU
    share and the `--cpu` overrides above it, until a tier has a configuration that fits and
    meets the latency targets (a larger tier costs more for the same speed). Each share's
    2 GiB baseline is measured once and judges every configuration with that share.
    (runs, baselines)"""

    def measure(limit_mb: int, cpu: float, tier_mb: int | None = None, settle: bool = False) -> Run:
        run = run_settled(
            function,
            model_dir,
            limit_mb,
            plan,
            engine,
            storage_url,
            log_dir,
            cpu=cpu,
            tier_mb=tier_mb,
            # a configuration near a target is run three times; a baseline once
            targets=(max_p50_ms, max_cold_s) if settle else None,
        )
        on_run(run)
        return run

    baselines: dict[float, Run] = {WHOLE_CORE: measure(BASELINE_MB, WHOLE_CORE, BASELINE_MB)}
    runs: list[Run] = []
    for memory in memory_tiers:
        for tier_mb, cpu in tiers.configurations([memory]):
            if cpus is not None and cpu not in cpus:
                continue
            runs.append(measure(int(tier_mb * (1 - MARGIN)), cpu, tier_mb, settle=True))
            if not runs[-1].answered or runs[-1].oom_kills:
                break  # the memory does not hold; more CPU will not change that
            if cpu not in baselines:  # measured only where a configuration held
                baselines[cpu] = measure(BASELINE_MB, cpu)
        held = [o for o in judged(runs, baselines) if o.memory_mb == memory]
        if any(o.meets(max_p50_ms, max_cold_s) for o in held):
            break
    return runs, baselines


def check(
    model_dir: str | Path,
    functions: tuple[str, ...] = ("predict", "gradcam"),
    warm: int = 30,
    storage_url: str | None = None,
    memory_tiers: tuple[int, ...] = (*TIERS_MB, *LARGER_TIERS_MB),
    cpus: tuple[float, ...] | None = None,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> dict[str, dict]:
    """`explore` each function; the report `describe` and `recommendation` read."""
    plan = request_plan(warm + 1)
    report = {}
    for function in functions:
        runs, baselines = explore(
            function,
            model_dir,
            plan,
            storage_url=storage_url,
            memory_tiers=memory_tiers,
            cpus=cpus,
            max_p50_ms=max_p50_ms,
            max_cold_s=max_cold_s,
        )
        report[function] = _summary(runs, baselines)
    return report


def judged(runs: list[Run], baselines: dict[float, Run]) -> list[tiers.Option]:
    """Each run's configuration, its memory judged per tier rather than per run: memory does
    not depend on the vCPU share. A tier holds when none of its runs was OOM-killed or
    thrashed (major faults: at an edge, some fresh servers thrash at every share and others
    do not, so one that did says some instances will) and most of those that answered kept
    their p50 within their share's 2 GiB bound (timing alone: one slow run is noise)."""
    options = []
    for memory in dict.fromkeys(r.tier_mb for r in runs):
        mine = [r for r in runs if r.tier_mb == memory]
        squeezed = [r.fits(baselines.get(r.cpu)) for r in mine if r.fits(None)]
        evident = any(r.oom_kills or r.thrashed for r in mine)
        holds = not evident and 2 * sum(squeezed) > len(squeezed)
        for run in mine:
            option = run.option(baselines.get(run.cpu))
            options.append(replace(option, fits=bool(holds and run.fits(None))))
    return options


def _summary(runs: list[Run], baselines: dict[float, Run]) -> dict:
    options = judged(runs, baselines)
    return {
        "tier_mb": min((o.memory_mb for o in options if o.fits), default=None),
        "whole_core": baselines[WHOLE_CORE].as_dict(),
        "baselines": {str(cpu): run.as_dict() for cpu, run in baselines.items()},
        "runs": [r.as_dict() for r in runs],
        "options": [asdict(o) for o in options],
        "cgroup": baselines[WHOLE_CORE].cgroup,
    }


def check_with_storage(
    model_dir: str | Path,
    functions: tuple[str, ...] = ("predict", "gradcam"),
    warm: int = 30,
    **options: Any,
) -> dict[str, dict]:
    """`check` with a storage emulator of its own, for gradcam's uploads."""
    return with_storage(check, model_dir, functions, warm, **options)
