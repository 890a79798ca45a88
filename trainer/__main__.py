"""`python -m trainer ...`: the same entry point as the `trainer` command (used under torchrun)."""

from trainer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
