"""SimCLR augmentation: the recipe, the per-image reference, the batched fast path and evaluation
transforms.
"""
