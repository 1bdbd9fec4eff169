#!/usr/bin/env bash
# The main job: the paper's WMT14 comparison on the embedded synthetic de->en corpus (data/demo),
# on CPU, through the commands used on WMT14 itself: prepare_wmt14_de_en.sh (sentencepiece +
# fairseq-preprocess), then compare.sh (train L2 / L1 / BWN Transformers and the negative control,
# three seeds each, evaluate each as the recipe does, tabulate the differences against L2 with the
# seeds' spread, Welch's test over the seeds and sacreBLEU's paired bootstrap, and plot the
# validation curves).
# The negative control is L-inf (transformer_linf): on this corpus it learns more slowly and ends 0.9-1.9
# BLEU below L2 (docs/results.md); the table calls it worse only where the seeds' spread allows (two
# seeds a side did not, Welch's p 0.165 over 2000 updates; three did, p 0.039), so its row shows what
# size of difference the comparison can see.
#   scripts/demo.sh [OUT [compare.sh options]]   (default OUT: demo_output; rerun to resume or redo nothing;
#                                    e.g. --retrain after a change of the schedule below)
#   DEMO_CONFIGS="transformer_l2 transformer_l1" DEMO_SEEDS=2 DEMO_UPDATES=2000
#   DEMO_PARALLEL=P                  runs side by side (default: one per CPU core, at most 6)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
NORMMATTERS_EXTRAS="${NORMMATTERS_EXTRAS:-plot}" source scripts/setup_env.sh
set_up=$SECONDS
OUT="${1:-demo_output}"
COMPARE_OPTIONS=("${@:2}")
CONTROL=transformer_linf
CONFIGS=(${DEMO_CONFIGS:-transformer_l2 transformer_l1 transformer_bwn $CONTROL})
SEEDS="${DEMO_SEEDS:-3}"
UPDATES="${DEMO_UPDATES:-2400}"
cores="$(nproc 2>/dev/null || echo 1)"
PARALLEL="${DEMO_PARALLEL:-$(( cores < 6 ? cores : 6 ))}"
# A small Transformer (2 layers, 64 wide, feed-forward 128, no dropout) and short batches, so that twelve runs
# fit on two cores, trained to their plateau: a cosine schedule over 2400 updates (over 2000, L-inf seed 2's
# validation NLL still fell 0.0170 bits over its last fifth, above the plateau's 1% of perplexity, 0.0144
# bits); a checkpoint and a validation every 25 updates, the last 5 kept for the averaging.
MODEL=(--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64 --decoder-embed-dim 64
       --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128
       --encoder-attention-heads 4 --decoder-attention-heads 4 --dropout 0)
SCHEDULE=(--max-update "$UPDATES" --lr-scheduler cosine --warmup-updates 60 --lr 0.005 --update-freq 1
          --max-tokens 2048 --save-interval-updates 25 --keep-interval-updates 5 --no-epoch-checkpoints
          --validate-interval-updates 25 --log-interval 25 --num-workers 0 --cpu)

echo "[demo] preparing data/demo into $OUT/data (sentencepiece + binarization; log: $OUT/prepare.log)"
mkdir -p "$OUT"
if ! scripts/prepare_wmt14_de_en.sh --raw-dir data/demo --vocab-size 1000 --workers 1 "$OUT/data" \
        > "$OUT/prepare.log" 2>&1; then
    tail -n 30 "$OUT/prepare.log" >&2
    exit 1
fi
echo "[demo] training and evaluating ${#CONFIGS[@]} configurations x $SEEDS seeds, $PARALLEL at a time"
scripts/compare.sh wmt14 "$OUT/data" "$OUT" --seeds "$SEEDS" --configs "${CONFIGS[@]}" --parallel "$PARALLEL" \
    "${COMPARE_OPTIONS[@]}" -- "${MODEL[@]}" "${SCHEDULE[@]}"
if [[ " ${CONFIGS[*]} " == *" $CONTROL "* ]]; then
    echo "[demo] $CONTROL is the negative control: the verdict above calls it worse than transformer_l2 when the" \
         "comparison can see a difference of its size (docs/results.md)"
fi
took() { echo "$(( $1 / 60 )) min $(( $1 % 60 )) s"; }
echo "[demo] done in $(took $(( SECONDS - set_up ))) after $(took $(( set_up - start ))) of set-up: $OUT/results.md, $OUT/curves.png"
