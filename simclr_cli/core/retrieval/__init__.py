"""Putting embeddings to work: an index folder of a model's embeddings, nearest-neighbour search
in it, and its near duplicates and outliers (``simclr index``, ``search``, ``duplicates``).
"""

from .duplicates import DuplicatesResult, find_duplicates
from .index import IndexBuild, SearchIndex, build_index, load_index
from .search import SearchResult, exact_search, search_index

__all__ = [
    "DuplicatesResult",
    "IndexBuild",
    "SearchIndex",
    "SearchResult",
    "build_index",
    "exact_search",
    "find_duplicates",
    "load_index",
    "search_index",
]
