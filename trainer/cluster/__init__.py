"""What launchers and clusters tell a process: torchrun's and SLURM's variables, stop signals, requeue, sbatch.

Every environment variable a launcher sets is read in `trainer.cluster.env` and nowhere else.
"""
