"""Tiny network configs (same code paths as the official ones, milliseconds per forward on CPU).

Plain dicts, usable as the ``config`` of a weight registry entry or preset override.
GroupNorm(32) needs every UNet channel count to be a multiple of 32.
"""

# DifFace-style UNet: per-level res-block counts, attention by spatial size, conv resampling. Input 32x32.
TINY_UNET_DIFFACE = {
    "image_size": 32,
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "num_res_blocks": [1, 2, 1],
    "attention_sizes": [16, 8],
    "channel_mult": [1, 1, 2],
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
}

# DR2-style (guided-diffusion) UNet: residual up/down-sampling blocks. Input 32x32.
TINY_UNET_DR2 = {
    "image_size": 32,
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "num_res_blocks": 1,
    "attention_sizes": [8],
    "channel_mult": [1, 2, 2],
    "num_head_channels": 32,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}

# DifFace SwinIR estimator layout at toy width: 64x64 in -> unshuffle 8 -> 8x8 tokens -> 64x64 out.
TINY_SWINIR = {
    "img_size": 8,
    "in_chans": 3,
    "embed_dim": 12,
    "depths": [2],
    "num_heads": [2],
    "window_size": 4,
    "mlp_ratio": 2,
    "unshuffle_scale": 8,
    "upscale": 8,
    "upsampler": "nearest+conv",
    "resi_connection": "1conv",
    "img_range": 1.0,
}

# DR2's SPARNetHD2D enhancer at toy size: 32x32 in/out, 2 down/up blocks to an 8x8 body, spectral norm on.
# bottleneck_size 16 -> hourglass depths 2, 1 (encoder), 1, 1 (body), 2, 3 (decoder); hourglass width fixed at 64.
TINY_SPARNETHD = {
    "size": 32,
    "min_ch": 8,
    "max_ch": 32,
    "min_feat_size": 8,
    "norm_type": "in",
    "res_depth": 1,
    "relu_type": "leakyrelu",
    "att_name": "spar",
    "bottleneck_size": 16,
}

# facexlib ParseNet (paste-back masks, ipc-guided's identity mask) at toy width: still 512 in / 512 out, 19 classes,
# since the parse mask's blur and border are defined at 512.
TINY_PARSENET = {"base_ch": 8, "ch_range": [8, 16], "res_depth": 1, "min_feat_size": 64}

# Real-ESRGAN's RRDBNet at toy width (one RRDB block); scale set per file (x2plus / x4plus).
TINY_RRDBNET = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}
