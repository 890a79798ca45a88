"""What a finished (or running) run looks like to a person: `trainer report`, `trainer compare`, `trainer runs`."""
