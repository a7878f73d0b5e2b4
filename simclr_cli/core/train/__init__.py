"""Pretraining: the plan, the loop, the run folder, optimisers, budgets, loggers, checkpoints and
safeguards.
"""
