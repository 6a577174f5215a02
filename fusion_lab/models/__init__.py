"""Models: assembling a model from a resolved config (``assemble``), building backbones by
name, timm's included, and loading weights into them (``backbones``), and counting
parameters and FLOPs (``profile``).

May import: config, registries, errors (and torch, timm). The components themselves live
in the catalogue (``registry/``, installed as ``fusion_lab.registry``), which is loaded
through ``fusion_lab.registries``, never imported here by name.
"""
