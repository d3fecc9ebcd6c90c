"""The screening service: a JSON API and a web page over one model (FastAPI + uvicorn)."""
