"""Demonstration selectors: unsupervised (random, BM25, kNN, MMR) and learned from LLM feedback."""

from rag.selectors.base import Selector, SelectorError, read_demos, write_demos
from rag.selectors.learned import Se2Selector, load_selector, train_selector
from rag.selectors.prompt import DemoTemplate, predict_labels
from rag.selectors.unsupervised import BM25Selector, KNNSelector, MMRSelector, RandomSelector

__all__ = [
    "BM25Selector", "DemoTemplate", "KNNSelector", "MMRSelector", "RandomSelector", "Se2Selector",
    "Selector", "SelectorError", "load_selector", "predict_labels", "read_demos", "train_selector",
    "write_demos",
]
