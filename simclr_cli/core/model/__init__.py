"""Models: timm backbones, projection heads, classifiers and model files."""
