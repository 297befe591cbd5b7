"""The ``rocmre`` command line: data, train, evaluate, describe, predict, serve."""

from __future__ import annotations

import logging

import typer

from rocmre.cli.common import CONTEXT_SETTINGS

# Plain (click) help and errors: nothing truncated at 80 columns, no colour or box drawing in redirected output.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None, context_settings=CONTEXT_SETTINGS,
                  help="Multimodal relation extraction by retrieval over relation descriptions (ROC).")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


def _register() -> None:
    from rocmre.cli import data, describe, modeling, predict, serve

    data.register(app)
    modeling.register(app)
    describe.register(app)
    predict.register(app)
    serve.register(app)


_register()
