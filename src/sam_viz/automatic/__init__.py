"""Automatic segmentation: segment everything, instance masks and their merging, stacks."""
