"""OpenAI-compatible serving of pipelines, generators and encoders (`rag serve`)."""

from rag.serving.app import Served, create_app
from rag.serving.config import ServeConfig

__all__ = ["ServeConfig", "Served", "create_app"]
