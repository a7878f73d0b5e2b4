"""Pictures: terminal images, augmentation previews, plots, run reports and embedding maps."""
