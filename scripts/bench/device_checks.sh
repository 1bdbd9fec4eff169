#!/usr/bin/env bash
# CUDA checks, run on a GPU machine with torch, sacrebleu and sentencepiece but no fairseq and no
# internet: fairseq's wheels come in .whl/ (../shared/tools/fetch_gpu_wheels.sh). Reports:
#  1. BWN on a cuDNN nn.LSTM really updates (pytorch#65688); every norm kind finite in fp16/bf16.
#  2. fp16 (--fp16) and --amp training of tiny l1 / linf / bwn Transformers and a bwn LSTM on the
#     demo corpus: loss goes down, stays finite.
#  3. Training words/s of the base Transformer (norm_transformer{,_l1,_bwn}_wmt_en_de, fp16,
#     --max-tokens 4096) and the hours that 100k updates of 8 x 4096 tokens would take on this GPU.
#  4. The fast norm paths (Triton kernels) against the eager reference on CUDA (tests/test_kernels.py
#     -k triton, and tests/test_triton_kernels.py, compiled for the GPU instead of interpreted).
#  5. scripts/bench/bench_norms.py --device cuda: every kind against nn.LayerNorm, fp32/bf16/fp16.
#  6. Whether fairseq's spawned workers import the user dir (fairseq#2143, #4875): one GPU, a
#     tcp init method makes fairseq-train spawn its worker process.
#  7. A torch profile of a small l1 call: CPU (Python, launch) against GPU time.
#  8. scripts/bench/bench_norms.py --device cuda --overhead: the per-call cost in microseconds (8x512).
#  9. Narrow accumulation on CUDA: tests/test_triton_narrow.py compiled for the GPU, and
#     scripts/bench/bench_precision.py --device cuda (the Triton kernel) against docs/precision.md (CPU).
# 10. Like-for-like kernels (issue 35): l2 from the same Triton template as l1/linf/rms against ATen's
#     LayerNorm in bf16, kernels alone (--kernels-only, CUDA events back to back) with at most 16 and 32
#     warps a program, and the whole call, at widths 1024-32768; top-k's first-call (compile) time at
#     k = 8, 32, 64.
# 11. The preflight of the default WMT14 grid at full size (issue 40): compare.sh --preflight on the demo
#     corpus prepared with a 32k vocabulary, each default configuration (6 layers, 512 wide; the LSTMs
#     1000 wide) for PREFLIGHT_UPDATES updates (default 100) of 8 x 4096 tokens on this one GPU, in the
#     comparison's precision: the table of first loss against uniform, loss scale, overflows, tokens/s,
#     peak memory and the projected GPU-hours of the grid. PARTS=preflight runs it (about 8 minutes on
#     an H200, estimated; not yet run).
# 12. The thin call path (issue 41): scripts/bench/bench_norms.py --device cuda at 4096x512 and 16384x1024 in fp16
#     and bf16 (whole call, host path and kernels alone queued behind torch.cuda._sleep, GB/s against
#     LayerNorm's and a copy), --overhead (8x512), and scripts/bench/bench_models.py --device cuda: the base WMT
#     Transformer with L2, L1, L-inf, top-k, BWN and none, steady-state words/s, ratios and peak memory.
#     PARTS=callpath runs 4 and 12 (about 8 minutes on an H200, estimated; not yet run).
# PARTS="1 2 3" selects parts (default 1 2 3; PRECISIONS and CONFIGS narrow part 2, BASE part 3).
# PARTS=speed is every GPU speed number of docs/performance.md in one run (under 8 minutes on an
# H200): parts 5 (at 4096x512, 16384x1024, 65536x1024), 8, and 3 with l2, l1, none and bwn, whose
# words/s ratios (l1 / l2, bwn / none) it prints.
# PARTS=kernels is issue 35's GPU run: parts 9 and 10 (about 8 minutes on an H200, not yet run).
# PARTS=precision is issue 28's GPU run: part 9, then part 2 with --fp16 on the demo corpus for
# transformer_{l2,l1,linf} and their _acc_fp16 twins (the norms accumulating in fp16 in the kernel).
# The summary goes to stdout and $OUT/summary.txt, the training logs to
# $OUT/logs; data and checkpoints stay in $WORK (default /tmp/device_work).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/device_out}" WORK="${WORK:-/tmp/device_work}" PARTS="${PARTS:-1 2 3}"
if [ "$PARTS" = speed ]; then
    PARTS="5 8 3" BASE="${BASE:-transformer_l2 transformer_l1 transformer_none transformer_bwn}"
    BENCH_ARGS="${BENCH_ARGS:---shapes 4096x512 16384x1024 65536x1024}"
fi
if [ "$PARTS" = kernels ]; then
    PARTS="9 10"
fi
if [ "$PARTS" = callpath ]; then
    PARTS="4 12"
fi
if [ "$PARTS" = preflight ]; then
    PARTS="11"
fi
if [ "$PARTS" = precision ]; then
    PARTS="9 2" PRECISIONS="${PRECISIONS:-fp16}"
    CONFIGS="${CONFIGS:-transformer_l2 transformer_l2_acc_fp16 transformer_l1 transformer_l1_acc_fp16 transformer_linf transformer_linf_acc_fp16}"
fi
mkdir -p "$OUT/logs" "$WORK"
exec > >(tee -a "$OUT/summary.txt") 2>&1
want() { [[ " $PARTS " == *" $1 "* ]]; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | grep -v 'is ignored' | tail -3
export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" NORMMATTERS_PYTHON=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
WORKERS="$(python3 -c 'import xdist' 2>/dev/null && echo '-n 16')"  # pytest-xdist where installed

if want 1; then
echo "== 1. BWN nn.LSTM on CUDA, norms in low precision"
python3 - <<'PY' 2>&1 | grep -v tensorboardX
import torch
from fairseq_normmatters import NORM_KINDS, apply_weight_norm, build_norm
lstm = torch.nn.LSTM(64, 64, num_layers=2).cuda()
names = apply_weight_norm(lstm, "bwn")
before = {n: getattr(lstm, n).detach().clone() for n in names}
opt = torch.optim.SGD(lstm.parameters(), lr=0.5)
lstm(torch.randn(7, 4, 64, device="cuda"))[0].pow(2).sum().backward()
opt.step()
print("cuDNN LSTM BWN weights changed:", {n: bool((getattr(lstm, n) - before[n]).abs().max() > 1e-4) for n in names})
x = torch.randn(64, 1024, device="cuda") * 1e3
for kind in NORM_KINDS:
    norm = build_norm(kind, 1024, **({"k": 8} if kind == "topk" else {})).cuda()
    print(kind, {str(dt): bool(torch.isfinite(norm(x.to(dt))).all()) for dt in (torch.float16, torch.bfloat16)})
PY
fi

if want 4; then
echo "== 4. fast norm paths vs the eager reference on CUDA"
# every Triton and compiled test compiled for the GPU, each failing test named (-rf), none cut off
timeout 420 python3 -m pytest -q -rf $WORKERS -p no:cacheprovider tests/test_kernels.py \
    -k "${KERNEL_TESTS:-triton or compiled or own_values or ties}" 2>&1 | grep -E '^(FAILED|ERROR)| passed| failed'
timeout 300 python3 -m pytest -q -rf $WORKERS -p no:cacheprovider tests/test_triton_kernels.py 2>&1 \
    | grep -E '^(FAILED|ERROR)| passed| failed'
fi

if want 9; then
echo "== 9. norms accumulating in fp16/bf16: the Triton kernel on CUDA"
timeout 300 python3 -m pytest -q -rf $WORKERS -p no:cacheprovider tests/test_triton_narrow.py 2>&1 \
    | grep -E '^(FAILED|ERROR)| passed| failed'
timeout 300 python3 scripts/bench/bench_precision.py --device cuda --out "$OUT/precision_cuda.md" 2>&1 | tail -1
# the settings computed alike on both (storage runs other float32 kernels on each device)
narrow() { sed -n '/^| kind | format | setting | gaussian/,/^$/p' "$1" | grep -E '\| (narrow|wide-mean) \|'; }
diff <(narrow docs/precision.md) <(narrow "$OUT/precision_cuda.md") > "$OUT/precision.diff" \
    && echo "the CUDA table's narrow and wide-mean rows are the CPU ones of docs/precision.md" \
    || { echo "tables differ:"; head -20 "$OUT/precision.diff"; }
fi

if want 10; then
echo "== 10. like-for-like: the Triton template's l2 against its l1/linf/rms and ATen's LayerNorm"
for run in "16 --kernels-only" "32 --kernels-only" "16"; do
    set -- $run
    echo "-- at most $1 warps a program, ${2:-the whole call (module, autograd)}"
    timeout 150 python3 scripts/bench/bench_norms.py --device cuda --kinds l2 l1 linf rms --dtypes bfloat16 \
        --shapes 16384x1024 4096x8192 1024x32768 --max-warps "$1" ${2:-} \
        --json "$OUT/bench_template_w$1${2:+_kernels}.json" 2>&1 | grep -v tensorboardX
done
for k in 8 32 64; do
    echo "-- top-k, k = $k: the first call's extra time is its compilation"
    timeout 120 python3 scripts/bench/bench_norms.py --device cuda --kinds topk --topk-k $k --dtypes float32 \
        --shapes 4096x1024 2>&1 | grep '^topk'
done
fi

if want 5; then
echo "== 5. norms vs nn.LayerNorm on CUDA"
timeout 300 python3 scripts/bench/bench_norms.py --device cuda --json "$OUT/bench_norms_cuda.json" ${BENCH_ARGS:-} 2>&1 | grep -v tensorboardX
fi

if want 8; then
echo "== 8. per-call cost on CUDA (8x512 fwd+bwd, microseconds)"
timeout 120 python3 scripts/bench/bench_norms.py --device cuda --overhead --json "$OUT/bench_overhead_cuda.json" 2>&1 | grep -v tensorboardX
fi

if want 2 || want 3 || want 6; then
    scripts/prepare_wmt14_de_en.sh --raw-dir data/demo --vocab-size 1000 --workers 8 "$WORK/data" 2>&1 | grep '^\[prepare\]'
fi
if want 2; then
echo "== 2. fp16 / amp training on the demo corpus"
TINY=(--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128
      --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --encoder-attention-heads 4 --decoder-attention-heads 4)
LSTM=(--encoder-embed-dim 128 --encoder-hidden-size 128 --decoder-embed-dim 128 --decoder-hidden-size 128
      --decoder-out-embed-dim 128)
SHORT=(--max-update 300 --warmup-updates 100 --lr 0.003 --update-freq 1 --no-save --log-interval 100
       --validate-interval-updates 300)
for precision in ${PRECISIONS:-fp16 amp}; do
    for config in ${CONFIGS:-transformer_l1 transformer_linf transformer_bwn lstm_bwn}; do
        case $config in lstm_*) model=("${LSTM[@]}") ;; *) model=("${TINY[@]}") ;; esac
        log="$OUT/logs/$precision-$config.log"
        PRECISION=$precision scripts/train_wmt14.sh "$config" "$WORK/data" "$WORK/$precision-$config" \
            "${model[@]}" "${SHORT[@]}" > "$log" 2>&1
        rc=$?
        echo "$precision $config rc=$rc $(grep -o '"valid_loss": "[^"]*"' "$log" | tail -1)" \
             "$(grep -o '"train_wps": "[^"]*"' "$log" | tail -1) $(grep -c -i 'overflow' "$log") overflow lines"
    done
done
fi

if want 3; then
echo "== 3. base Transformer speed (fp16, --max-tokens 4096, one GPU)"
for config in ${BASE:-transformer_l2 transformer_l1 transformer_bwn}; do
    log="$OUT/logs/base-$config.log"
    scripts/train_wmt14.sh "$config" "$WORK/data" "$WORK/base-$config" --max-update "${BASE_UPDATES:-200}" --update-freq 1 \
        --no-save --disable-validation --log-interval 50 > "$log" 2>&1
    rc=$?
    wps=$(grep -o '"wps": "[^"]*"' "$log" | tail -1 | grep -o '[0-9.]*')
    echo "$config rc=$rc train_wps=$wps hours_for_100k_updates_of_8x4096=$(python3 -c "print(round(100000*8*4096/float('${wps:-0}' or 1)/3600, 1))")"
    declare "WPS_$config=${wps:-0}"
done
ratio() { python3 -c "a, b = float('${!1:-0}' or 0), float('${!2:-0}' or 0); print(f'{a / b:.3f}x' if b else 'n/a')"; }
echo "words/s ratios: l1 / l2 $(ratio WPS_transformer_l1 WPS_transformer_l2), bwn / none $(ratio WPS_transformer_bwn WPS_transformer_none)"
fi

if want 6; then
echo "== 6. fairseq-train spawns its worker (tcp init method, one GPU): does it import the user dir?"
log="$OUT/logs/spawn.log"
timeout 120 fairseq-train "$WORK/data/bin" --user-dir fairseq_normmatters --task translation \
    --arch norm_transformer_l1_iwslt_de_en --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 \
    --decoder-embed-dim 128 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --share-all-embeddings \
    --optimizer adam --lr 0.001 --max-tokens 4096 --max-update 30 --fp16 --no-save --disable-validation \
    --distributed-world-size 1 --distributed-init-method tcp://127.0.0.1:29517 --log-format json \
    --log-interval 10 > "$log" 2>&1
rc=$?
echo "spawned worker rc=$rc, spawn used: $(grep -c 'torch.multiprocessing\|distributed init (rank 0)' "$log") lines," \
     "last train loss: $(grep -o '"train_loss": "[^"]*"' "$log" | tail -1)"
[ $rc = 0 ] || tail -5 "$log"
fi

if want 7; then
echo "== 7. where the time of a small l1 norm call goes (torch profiler, 4096x512 fp32, 20 fwd+bwd)"
python3 - <<'PY' 2>&1 | grep -v tensorboardX
import torch
from fairseq_normmatters import build_norm
x = torch.randn(4096, 512, device="cuda", requires_grad=True)
grad = torch.randn_like(x)
norm = build_norm("l1", 512).cuda()
for _ in range(5):
    norm(x).backward(grad)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                        torch.profiler.ProfilerActivity.CUDA]) as profile:
    for _ in range(20):
        norm(x).backward(grad)
    torch.cuda.synchronize()
print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
PY
fi

if want 11; then
echo "== 11. compare.sh --preflight of the default WMT14 grid at full size on this GPU"
scripts/prepare_wmt14_de_en.sh --raw-dir data/demo --vocab-size 32000 --workers 8 "$WORK/data32k" 2>&1 | grep '^\[prepare\]'
scripts/compare.sh wmt14 "$WORK/data32k" "$WORK/preflight" --preflight \
    --preflight-updates "${PREFLIGHT_UPDATES:-100}" 2>&1 | grep -v -e tensorboardX -e '^INFO'
cp -r "$WORK/preflight/preflight" "$OUT/logs/preflight" 2>/dev/null
fi

if want 12; then
echo "== 12. the call path on CUDA: host, kernels and whole call; end to end"
timeout 240 python3 scripts/bench/bench_norms.py --device cuda --shapes 4096x512 16384x1024 --dtypes float16 bfloat16 \
    --kinds l1 linf topk l2 --json "$OUT/logs/callpath_norms.json" 2>&1 | grep -v -e tensorboardX -e '^INFO'
timeout 60 python3 scripts/bench/bench_norms.py --device cuda --overhead --kinds l1 linf 2>&1 | grep -v tensorboardX
timeout 300 python3 scripts/bench/bench_models.py --device cuda --updates 200 --json "$OUT/logs/callpath_models.json" \
    2>&1 | grep -v -e tensorboardX -e '^INFO'
fi
