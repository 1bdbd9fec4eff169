"""compare.sh --launcher slurm: each run a SLURM job through submitit (launcher.py), its sbatch
options (options.py), the job itself (job.py) and how a job ended (endings.py)."""
