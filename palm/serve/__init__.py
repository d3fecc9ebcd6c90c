"""The screening service: a JSON API and a web page over one model (FastAPI + uvicorn)."""
from palm.serve.app import create_app
from palm.serve.config import MIN_TOKEN_CHARS, TOKEN_ENV, ServiceConfig, is_loopback
from palm.serve.guard import SECURITY_HEADERS, server_config
from palm.serve.model_runner import ModelRunner

__all__ = ["MIN_TOKEN_CHARS", "SECURITY_HEADERS", "TOKEN_ENV", "ModelRunner", "ServiceConfig",
           "create_app", "is_loopback", "server_config"]
