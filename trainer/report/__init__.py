"""What a finished (or running) run looks like to a person: `trainer report`, `trainer compare`, `trainer runs`.

`run_files` reads a run directory (pure Python), `plots` draws (matplotlib, Agg), `confusion` evaluates a
classifier's checkpoint (the one part that needs torch), `output` writes a folder whole; `report`, `compare`
and `runs` are the three commands, `commands` their CLI words.
"""
