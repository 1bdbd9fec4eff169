#!/usr/bin/env bash
# Install what the SLURM tests start (tests/slurm_cluster.py): Debian's slurmctld, slurmd,
# slurm-client (22.05) and munge, with apt-get as root. Where that cannot be done it says why and
# exits 0: the SLURM tests are then skipped with that reason (tests/test_slurm.py).
set -uo pipefail
PACKAGES=(slurmctld slurmd slurm-client munge)
missing=()
for tool in slurmctld slurmd sbatch munged; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "[setup] SLURM is not installed (${missing[*]}) and cannot be here (needs root and apt-get): the SLURM tests will be skipped"
    exit 0
fi
echo "[setup] installing ${PACKAGES[*]} with apt-get (the SLURM tests' one-node cluster)"
log="$(mktemp)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log"
    echo "[setup] apt-get could not install ${PACKAGES[*]}: the SLURM tests will be skipped"
fi
rm -f "$log"
