"""``python -m robeing.agents`` runs the ``robeing`` command."""

from .cli import main

main()
