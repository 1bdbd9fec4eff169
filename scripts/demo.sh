#!/usr/bin/env bash
# The main job: the paper's WMT14 pipeline on the embedded synthetic de->en corpus (data/demo),
# on CPU: sentencepiece -> fairseq-preprocess -> train L2 / L1 / BWN Transformers -> evaluate
# (checkpoint averaging, beam search, sacreBLEU, perplexity) -> table + loss plot.
# Every configuration trains once per seed, so that the table's differences against L2 come
# with the spread that the seeds give (and sacreBLEU's paired bootstrap on the test set).
#   scripts/demo.sh [OUT]            (default OUT: demo_output)
#   DEMO_CONFIGS="transformer_l2 transformer_l1 transformer_bwn lstm_nonorm lstm_bwn" DEMO_SEEDS="1 2 3"
#   DEMO_UPDATES=250
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
OUT="${1:-demo_output}"
CONFIGS=(${DEMO_CONFIGS:-transformer_l2 transformer_l1 transformer_bwn})
SEEDS=(${DEMO_SEEDS:-1 2})
UPDATES="${DEMO_UPDATES:-250}"
SCHEDULE=(--max-update "$UPDATES" --warmup-updates 100 --lr 0.003 --update-freq 1 --max-tokens 4096
          --save-interval-updates 50 --keep-interval-updates 3 --no-epoch-checkpoints
          --validate-interval-updates 50 --log-interval 25 --num-workers 0)
TRANSFORMER=(--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128
             --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256
             --encoder-attention-heads 4 --decoder-attention-heads 4)
LSTM=(--encoder-embed-dim 128 --encoder-hidden-size 128 --decoder-embed-dim 128
      --decoder-hidden-size 128 --decoder-out-embed-dim 128 --dropout 0.1)
start=$SECONDS
echo "== [demo] preparing data/demo into $OUT/data (sentencepiece + fairseq-preprocess)"
scripts/prepare_wmt14_de_en.sh --raw-dir data/demo --vocab-size 1000 --workers 2 "$OUT/data"
runs=()
total=$(( ${#CONFIGS[@]} * ${#SEEDS[@]} ))
for seed in "${SEEDS[@]}"; do
    for config in "${CONFIGS[@]}"; do
        case "$config" in lstm_*) model=("${LSTM[@]}") ;; *) model=("${TRANSFORMER[@]}") ;; esac
        run="$OUT/$config-seed$seed"
        echo "== [demo] $(( ${#runs[@]} + 1 ))/$total training $config, seed $seed, for $UPDATES updates ($((SECONDS - start)) s so far)"
        scripts/train_wmt14.sh "$config" "$OUT/data" "$run" "${model[@]}" "${SCHEDULE[@]}" --seed "$seed" --cpu \
            2>&1 | grep --line-buffered -E '\| (train_inner|valid|train) \||error|Error' | sed -u 's/\(.\{200\}\).*/\1/'
        echo "== [demo] evaluating $config, seed $seed"
        scripts/evaluate.sh "$run" "$OUT/data" --average 3 --cpu 2>&1 | grep --line-buffered -E '^\[evaluate\]|error'
        runs+=("$run")
    done
done
"$PY" scripts/collect_results.py "${runs[@]}" --out "$OUT/results.md" --plot "$OUT/curves.png"
echo "== [demo] done in $((SECONDS - start)) s: $OUT/results.md, $OUT/curves.png"
