"""``python -m ltx_audio_reference.cli``: how ``accelerate launch`` starts the CLI."""

from ltx_audio_reference.cli import main

main()
