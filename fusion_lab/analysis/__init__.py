"""Analysis: what a study's results say. Reading results folders into rows (``aggregate``),
intervals and tests (``stats``), the tables and their output formats (``table``,
``table_formats``), learning curves and plots (``curves``, ``plot``), throughput and cost
of variants (``bench``), and a trained run's weights as a shareable file (``export``).

May import: maps, training, plan, models, data, config, store, registries, errors.
Never imported by the machinery below it; only the CLI imports it.
"""
