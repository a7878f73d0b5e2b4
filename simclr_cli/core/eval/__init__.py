"""Evaluation: embedding, kNN, linear probes, splits, fine-tuning and prediction."""
