"""The online kNN monitor of pretraining: ``simclr pretrain --val DIR --eval-every N``.

Every N steps the backbone embeds a labelled validation folder and a leave-one-out weighted kNN
(cosine similarity, k=200, temperature 0.1; Wu et al. 2018) scores it: each image is classified
by its neighbours among the other validation images. No labels of the training data are needed.

The monitor keeps its cost within ``max_overhead`` (10%) of the training time: the images are
decoded and preprocessed once and kept in memory (capped in number), and an evaluation that is
due is skipped while the time spent evaluating so far exceeds that share of the time trained.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from torch import nn

from ..data.files import load_rgb
from ..eval.embed import eval_transform_for
from ..eval.knn import knn_predict, topk_accuracy
from ..eval.splits import find_classified_images
from ..model.simclr import ModelMetadata

#: Largest number of validation images kept in memory and embedded at each evaluation.
MAX_MONITOR_IMAGES = 2000
#: Memory the preprocessed images may take (float32): 2000 images at 32 px, ~440 at 224 px.
MAX_MONITOR_BYTES = 256 * 1024 * 1024


class KnnMonitor:
    """Leave-one-out weighted kNN accuracy of the backbone on a labelled folder.

    Args:
        val_dir: Folder with one sub-folder of images per class.
        metadata: The model's metadata (image size, crop, normalisation).
        every: Evaluate every this many steps.
        device: Where the backbone runs.
        max_images: At most this many images (a seeded, class-stratified sample).
        k: Neighbours that vote.
        temperature: Softness of the vote weights.
        max_overhead: Largest share of the training time spent evaluating.
        seed: Seed of the image sample.

    Raises:
        DataError: When the folder has empty classes or a single class.
    """

    def __init__(
        self,
        val_dir: Path,
        *,
        metadata: ModelMetadata,
        every: int,
        device: torch.device,
        max_images: int = MAX_MONITOR_IMAGES,
        k: int = 200,
        temperature: float = 0.1,
        max_overhead: float = 0.1,
        seed: int = 0,
    ):
        images = find_classified_images(val_dir, flag="--val")
        order = list(range(len(images.paths)))
        random.Random(seed).shuffle(order)
        per_image = 3 * 4 * metadata.image_size**2
        chosen = sorted(order[: max(2, min(max_images, MAX_MONITOR_BYTES // per_image))])
        transform = eval_transform_for(metadata)
        self.images = torch.stack([transform(load_rgb(images.paths[i])) for i in chosen])
        self.labels = torch.tensor([images.labels[i] for i in chosen])
        self.num_classes = len(images.classes)
        self.every = every
        self.device = device
        self.k = k
        self.temperature = temperature
        self.max_overhead = max_overhead
        self.eval_seconds = 0.0
        self.last_seconds = 0.0
        self.started = time.perf_counter()
        self.latest: dict[str, float] = {}

    def due(self, step: int) -> bool:
        """Whether to evaluate after ``step``: every N steps, within the overhead bound."""
        if step % self.every != 0:
            return False
        trained = time.perf_counter() - self.started - self.eval_seconds
        return self.eval_seconds <= self.max_overhead * trained

    @torch.no_grad()
    def evaluate(self, backbone: nn.Module, *, step: int, autocast_context) -> dict[str, float]:
        """Score the backbone now; restores its training mode afterwards.

        Returns:
            ``{"step", "knn_top1", "knn_top5", "eval_seconds"}``.
        """
        started = time.perf_counter()
        was_training = backbone.training
        backbone.eval()
        batches = []
        for batch in self.images.split(256):
            with autocast_context:
                batches.append(backbone(batch.to(self.device)).float())
        backbone.train(was_training)
        features = torch.cat(batches)
        # Leave one out: each image is classified by the others, never voting for itself.
        votes = knn_predict(
            features,
            self.labels.to(features.device),
            num_classes=self.num_classes,
            k=self.k,
            temperature=self.temperature,
        )
        seconds = time.perf_counter() - started
        self.eval_seconds += seconds
        self.last_seconds = seconds
        self.latest = {
            "knn_top1": round(topk_accuracy(votes.cpu(), self.labels, 1), 4),
            "knn_top5": round(topk_accuracy(votes.cpu(), self.labels, 5), 4),
        }
        return {"step": step, **self.latest, "eval_seconds": round(seconds, 3)}
