"""Built-in datasets; importing this package registers them in ``DATASETS``."""

from fusion_lab.registry.datasets import (  # noqa: F401
    cache,
    cub200,
    fgvc_aircraft,
    imagefolder,
    stanford_cars,
    synthetic_fgvc,
    synthetic_shapes,
)
