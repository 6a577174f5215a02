"""Orchestration: running a study. Which runs train where (``runner``: claims, leases,
recording each outcome), the launchers that place them (``launchers``: local, SLURM,
Ray), and the one module that starts processes (``spawn``: workers per GPU, torchrun;
``torchrun``: its quiet entry point).

May import: maps, training, plan, models, data, config, store, registries, errors; never
analysis (the CLI prints tables after a study has run).
"""
