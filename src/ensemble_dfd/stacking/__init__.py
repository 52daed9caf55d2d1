"""Stacking: the logits store, metrics, comparisons with CIs, power and video-level aggregation."""
