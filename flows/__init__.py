"""Drivers that compose the stages in `tasks/`: the Prefect flow and the `stillhouse` CLI."""
