"""Orchestration: running a study. The one orchestrator (``study_run.run_study``: plan,
world size, launcher, study.json, launch, report; ``fusionlab run`` is a thin CLI over
it), which runs train where (``runner``: claims, leases, recording each outcome), the
launchers that place them (``launchers``: local, SLURM, Ray; each declares what it needs
as attributes), and the one module that starts processes (``spawn``: workers per GPU,
torchrun; ``torchrun``: its quiet entry point).

May import: maps, training, plan, models, data, config, store, registries, errors; never
analysis (the CLI prints tables after a study has run).
"""
