"""ssltrace: trace how self-supervised vision representations form.

The library knows nothing about Snakemake: each workflow rule calls one `ssltrace <stage>`
subcommand (see `ssltrace.cli`), which calls one function of the stage's module.
"""

__version__ = "0.1.0"
