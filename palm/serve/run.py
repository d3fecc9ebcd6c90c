"""Run the screening service (palm.serve.app) under uvicorn: what `palm serve` does."""
from __future__ import annotations

import logging
import os
import sys

from palm.errors import UserError
from palm.weights import trust_checkpoints

try:
    import uvicorn

    from palm.serve.app import create_app
    from palm.serve.config import TOKEN_ENV, ServiceConfig
    from palm.serve.guard import server_config
    from palm.serve.logs import configure_json_logging, log_event
except ModuleNotFoundError as missing:
    raise UserError(f"{missing.name} is not installed; the service needs "
                    'pip install -e ".[serve]"') from None

STARTUP_FAILED = 3  # uvicorn.run's exit code when the server did not start


def service_config(checkpoint: str, *, token: str | None = None, **settings) -> ServiceConfig:
    """The service's settings (ServiceConfig's fields); the token defaults to $PALM_SERVE_TOKEN."""
    return ServiceConfig(checkpoint=checkpoint, token=token or os.environ.get(TOKEN_ENV) or None,
                         **settings)


def run_service(checkpoint: str, *, port: int = 8000, verbosity: int = 0,
                trust_checkpoint: bool = False, **settings) -> int:
    """Serve `checkpoint` until Ctrl-C; 0 after a clean stop, STARTUP_FAILED when the server did
    not start (its log says why).

    Args:
        verbosity: -1 warnings only (to the process's real stderr, which a quiet command
            silences otherwise), 0 info, 1 debug: of the JSON log on stderr.
        settings: the other fields of ServiceConfig (host, token, save_dir, max_* ...).
    """
    if not 0 <= port <= 65535:
        raise UserError(f"port must be in [0, 65535], got {port}", param="port")
    config = service_config(checkpoint, **settings)
    config.check()  # before the model loads: a refused host should not wait for it
    configure_json_logging(
        logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO,
        sys.__stderr__ if verbosity < 0 else sys.stderr)
    with trust_checkpoints(trust_checkpoint):
        app = create_app(config)
    log_event("listening", url=f"http://{config.host}:{port}/")
    server = uvicorn.Server(server_config(app, config, port))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down
        pass
    return 0 if server.started else STARTUP_FAILED
