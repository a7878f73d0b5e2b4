"""Weighted k-nearest-neighbour classification of embeddings.

The monitor of the instance-discrimination literature that SimCLR follows (Wu et al. 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination"): cosine similarity,
the k most similar training samples vote with weight exp(similarity / temperature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor | None = None,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of query samples from their weighted nearest neighbours.

    Args:
        train_features: (N, D) features of the labelled samples.
        train_labels: (N,) int64 labels in [0, num_classes), on the device of the features.
        query_features: (Q, D) features to classify; None classifies the labelled samples
            themselves, leave-one-out (no sample votes for itself).
        num_classes: Number of classes C.
        k: Neighbours that vote (clipped to N, or to N - 1 leave-one-out).
        temperature: Softness of the vote weights.
        chunk_size: Queries per chunk, to bound memory at chunk_size x N.

    Returns:
        Scores of shape (Q, C) (or (N, C) leave-one-out); higher is more likely.
    """
    train = F.normalize(train_features.float(), dim=1)
    leave_one_out = query_features is None
    query = train if query_features is None else F.normalize(query_features.float(), dim=1)
    k = min(k, train.shape[0] - 1 if leave_one_out else train.shape[0])
    scores = []
    for start in range(0, query.shape[0], chunk_size):
        similarity = query[start : start + chunk_size] @ train.T
        if leave_one_out:
            rows = torch.arange(similarity.shape[0], device=similarity.device)
            similarity[rows, rows + start] = -float("inf")
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        votes = torch.zeros(similarity.shape[0], num_classes, device=similarity.device)
        votes.scatter_add_(1, train_labels[top_index], weights)
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores.

    Args:
        scores: (Q, C) class scores.
        labels: (Q,) true labels.
        k: How many top classes count (clipped to C).

    Returns:
        Accuracy in [0, 1].
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Top-1 and top-5 weighted kNN accuracy.

    Args:
        train_features: Features of the labelled images, shape (N, D).
        train_labels: Their labels, int64 (N,).
        query_features: Features of the images to classify, shape (M, D).
        query_labels: Their true labels, int64 (M,).
        num_classes: Number of classes C.
        k: Neighbours that vote.
        temperature: Temperature of the similarity weights exp(sim / t).

    Returns:
        ``{"top1": float, "top5": float}``, fractions in [0, 1].
    """
    scores = knn_predict(
        train_features,
        train_labels,
        query_features,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
    )
    return {
        "top1": topk_accuracy(scores, query_labels, 1),
        "top5": topk_accuracy(scores, query_labels, 5),
    }
