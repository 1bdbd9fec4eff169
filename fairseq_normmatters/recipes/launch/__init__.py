"""Where the runs of a comparison run: on this machine (local.py) or as SLURM jobs (slurm/)."""
