"""Image data: finding files, checking them, decoding, caching, loading and sampling."""
