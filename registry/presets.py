"""Presets named after the rows of the paper's Tables 2 and 3, and the released code.

A preset fills a model config's fields that the study leaves unset (``fusion``,
``attention``, ``head``, ``init``, ...) and gives its component arguments (``fusion_args``,
...) under the study's own (``config.apply_preset``); anything the study sets explicitly
wins. The resolved values are in the run's config, so each preset has its own run ids.
"""

from fusion_lab.registries import PRESETS

PRESETS.add("baseline", {"fusion": "none", "attention": "none", "head": "linear"},
            "Fine-tuned backbone: global average pooling + one linear layer (Table 2, Baseline)")
PRESETS.add("hl", {"fusion": "fpn_add", "attention": "none", "head": "multi_level"},
            "HL pathway by FPN-style addition, no attention (Table 2, HL)")
PRESETS.add("hl+lh", {"fusion": "fpn_add", "attention": "sa+ca", "head": "multi_level"},
            "FPN-style addition + SA and CA (Table 2, HL+LH; Table 3, w/o ConvLSTM)")
PRESETS.add("cn_cnn", {"fusion": "convlstm", "attention": "sa+ca", "head": "multi_level"},
            "ConvLSTM fusion + SA and CA: the paper's CN-CNN (Table 3, w/ ConvLSTM)")
PRESETS.add("cn_cnn_released", {
    "fusion": "convlstm", "attention": "sa+ca", "head": "multi_level",
    "fusion_args": {"sequence": "batch", "bn_momentum": 0.01}, "init": "released"},
    "CN-CNN as the authors' released code runs it: ConvLSTM over the minibatch, BN momentum "
    "0.01, their init")

# A model config that names no preset gets this one (read through PRESETS.default).
PRESETS.set_default("cn_cnn")
