"""fairseq models of the plugin; importing this registers them and their architectures."""

from . import lstm, transformer  # noqa: F401
