"""``python -m rocmre``: the command line."""

from rocmre.cli import app

if __name__ == "__main__":
    app()
