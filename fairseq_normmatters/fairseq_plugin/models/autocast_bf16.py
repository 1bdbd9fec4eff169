"""--autocast-bf16: the training forward under torch.autocast(bfloat16), float32 weights
(fairseq's own --bf16 implies --tpu and crashes)."""

import torch


def check_float32_weights(model) -> None:
    """--autocast-bf16 trains float32 weights: refuse a model that fairseq's --fp16 (or
    --memory-efficient-fp16) turned into float16. Evaluation tools may still run it in fp16."""
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"--autocast-bf16 trains float32 weights under bf16 autocast, but this model's weights "
                         f"are {dtype} (fairseq's --fp16 or --memory-efficient-fp16): give only one of them")


class AutocastBF16:
    """Mixin before a fairseq model class; `autocast_bf16` is set when the model is built."""

    autocast_bf16 = False

    def forward(self, src_tokens, *args, **kwargs):
        """fairseq's forward; in training mode with --autocast-bf16, under torch.autocast(bfloat16)
        on the device of src_tokens (the weights, gradients and optimizer stay float32)."""
        if not (self.training and self.autocast_bf16):
            return super().forward(src_tokens, *args, **kwargs)
        check_float32_weights(self)
        with torch.autocast(device_type=src_tokens.device.type, dtype=torch.bfloat16):
            return super().forward(src_tokens, *args, **kwargs)
