"""Elastic building blocks and supernet families; each family = a module + its space constructor."""

from supernets.dense import ElasticDense, QuantDense, prefix_mask
from supernets.mlp import MLPFamily, PlainMLP, SlimmableMLP
from supernets.quant import FLOAT_BITS, SUPPORTED_BITS, QuantParam, quantize_activation, quantize_weight
from supernets.registry import FAMILIES, get_family

__all__ = [
    "FAMILIES", "FLOAT_BITS", "SUPPORTED_BITS", "ElasticDense", "MLPFamily", "PlainMLP", "QuantDense",
    "QuantParam", "SlimmableMLP", "get_family", "prefix_mask", "quantize_activation", "quantize_weight",
]
