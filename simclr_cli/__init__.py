"""simclr: SimCLR contrastive pretraining for any folder of unlabeled images.

The Python API is the same set of functions the command line calls::

    from simclr_cli import PretrainConfig, pretrain, load_model, embed

and examples/ shows them in use (pretraining and probing, search, timm fine-tuning, and the
loss and augmentations in your own training loop).
"""

from ._version import __version__
from .core.augment.eval import create_eval_transform
from .core.augment.presets import create_view_transform
from .core.choices import (
    BadImagePolicy,
    DeviceName,
    HeadVersion,
    LRScaling,
    OptimizerName,
    Precision,
    Preset,
    Stem,
)
from .core.config import (
    DemoConfig,
    EmbedConfig,
    FinetuneConfig,
    PredictConfig,
    PretrainConfig,
    ProbeConfig,
)
from .core.demo import run_demo
from .core.errors import SimCLRError
from .core.eval.embed import embed, embed_images, read_embeddings, write_embeddings
from .core.eval.finetune import FinetuneResult, finetune
from .core.eval.knn import knn_accuracy, knn_predict
from .core.eval.predict import PredictResult, predict
from .core.eval.probe import ProbeResult, probe
from .core.loss.nt_xent import nt_xent_loss
from .core.model.backbone import create_backbone
from .core.model.classifier import ClassifierModel, load_classifier
from .core.model.files import load_model, read_metadata, save_model
from .core.model.head import ProjectionHead, create_projection_head
from .core.model.simclr import ModelMetadata, SimCLRModel, create_simclr_model
from .core.train.loop import PretrainResult, pretrain
from .core.train.optimizers import LARS

__all__ = [
    "LARS",
    "BadImagePolicy",
    "ClassifierModel",
    "DemoConfig",
    "DeviceName",
    "EmbedConfig",
    "FinetuneConfig",
    "FinetuneResult",
    "HeadVersion",
    "LRScaling",
    "ModelMetadata",
    "OptimizerName",
    "Precision",
    "PredictConfig",
    "PredictResult",
    "Preset",
    "PretrainConfig",
    "PretrainResult",
    "ProbeConfig",
    "ProbeResult",
    "ProjectionHead",
    "SimCLRError",
    "SimCLRModel",
    "Stem",
    "__version__",
    "create_backbone",
    "create_eval_transform",
    "create_projection_head",
    "create_simclr_model",
    "create_view_transform",
    "embed",
    "embed_images",
    "finetune",
    "knn_accuracy",
    "knn_predict",
    "load_classifier",
    "load_model",
    "nt_xent_loss",
    "predict",
    "pretrain",
    "probe",
    "read_embeddings",
    "read_metadata",
    "run_demo",
    "save_model",
    "write_embeddings",
]

# Augmentation parameters and their preview (`simclr visualize-aug`).
from .core.augment.reference import (
    ViewParams,
    ViewTransform,
    apply_view_params,
    sample_view_params,
)
from .core.config import VisualizeConfig
from .core.viz.preview import create_augmentation_preview
from .core.viz.preview_png import render_grid, save_grid

__all__ += [
    "ViewParams",
    "ViewTransform",
    "VisualizeConfig",
    "apply_view_params",
    "create_augmentation_preview",
    "render_grid",
    "sample_view_params",
    "save_grid",
]

# Reading a run back and mapping embeddings (`simclr report`, `simclr embed --map`).
from .core.viz.embedding_map import (  # noqa: E402
    EmbeddingMap,
    MapMethod,
    create_embedding_map,
    save_embedding_map,
)
from .core.viz.report import RunReport, read_run, render_report_png, save_report_png  # noqa: E402

__all__ += [
    "EmbeddingMap",
    "MapMethod",
    "RunReport",
    "create_embedding_map",
    "read_run",
    "render_report_png",
    "save_embedding_map",
    "save_report_png",
]

# The batched augmentation of training, for users' own loops (uint8 batch in, two views out).
from .core.augment.batched import BatchAugmenter  # noqa: E402

__all__ += ["BatchAugmenter"]

# Model files for other tools: `simclr info` and `simclr export`.
from .core.choices import ExportFormat  # noqa: E402
from .core.config import ExportConfig  # noqa: E402
from .core.export.exporter import ExportResult, export_model  # noqa: E402
from .core.model.info import ModelInfo, read_model_info  # noqa: E402

__all__ += [
    "ExportConfig",
    "ExportFormat",
    "ExportResult",
    "ModelInfo",
    "export_model",
    "read_model_info",
]
