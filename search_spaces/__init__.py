"""Search spaces: named integer choices per layer, gated by depth, with encoding and Optuna suggestion."""

from search_spaces.space import Config, Dimension, SearchSpace, config_key, is_bit_width

__all__ = ["Config", "Dimension", "SearchSpace", "config_key", "is_bit_width"]
