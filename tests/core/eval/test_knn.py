"""Weighted kNN classification."""

from __future__ import annotations

import torch

from simclr_cli.core.eval.knn import knn_accuracy, knn_predict, topk_accuracy


def test_knn_predict__separable_clusters_are_classified():
    torch.manual_seed(0)
    centres = torch.eye(3, 8) * 5
    train = torch.cat([centres[i] + 0.1 * torch.randn(20, 8) for i in range(3)])
    labels = torch.arange(3).repeat_interleave(20)
    query = centres + 0.1 * torch.randn(3, 8)
    scores = knn_predict(train, labels, query, num_classes=3, k=10, chunk_size=2)
    assert scores.argmax(dim=1).tolist() == [0, 1, 2]
    result = knn_accuracy(train, labels, query, torch.arange(3), num_classes=3, k=10)
    assert result == {"top1": 1.0, "top5": 1.0}


def test_topk_accuracy__counts_label_in_top_k():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    labels = torch.tensor([2, 0])
    assert topk_accuracy(scores, labels, 1) == 0.5
    assert topk_accuracy(scores, labels, 2) == 1.0


def test_knn_predict__leave_one_out_never_votes_for_itself():
    torch.manual_seed(0)
    features = torch.randn(7, 5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    scores = knn_predict(features, labels, num_classes=3, k=3, temperature=0.5, chunk_size=3)
    # The same vote written out: cosine similarity, the diagonal excluded, exp(s / t) weights.
    unit = torch.nn.functional.normalize(features, dim=1)
    similarity = (unit @ unit.T).fill_diagonal_(-float("inf"))
    top_similarity, top_index = similarity.topk(3, dim=1)
    expected = torch.zeros(7, 3).scatter_add_(1, labels[top_index], (top_similarity / 0.5).exp())
    assert torch.allclose(scores, expected)


def test_knn_predict__leave_one_out_clips_k_below_the_sample_count():
    features = torch.eye(3)
    scores = knn_predict(features, torch.tensor([0, 1, 1]), num_classes=2, k=200)
    assert torch.isfinite(scores).all() and scores.shape == (3, 2)
