"""Attention maps: Figure 3 (``viz``), scoring maps against annotated regions
(``scoring``, ``viz_score``; ``regions``: the annotated boxes and parts a dataset carries,
torch-free) and the attention table (``attention_table``).

May import: training, plan, models, data, config, store, registries, errors.
"""
