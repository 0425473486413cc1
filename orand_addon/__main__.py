"""`python -m orand_addon` runs the command line."""

from .cli import main

main()
