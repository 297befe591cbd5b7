"""The HTTP service and its web page (needs the ``serve`` extra: fastapi, uvicorn, python-multipart)."""

from rocmre.service.app import create_app, serve_in_thread

__all__ = ["create_app", "serve_in_thread"]
