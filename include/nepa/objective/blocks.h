// The plain transformer block the sibling objectives' heads use (MAE's decoder, I-JEPA's predictor: timm's Block
// as their releases build it), expressed as a backbone ModelConfig so that they reuse the backbone's NepaLayer.
#pragma once

#include "nepa/config/config.h"

namespace nepa {

// width, heads, MLP hidden width, depth and LayerNorm eps as given; qkv bias, GELU MLP, no QK-Norm, LayerScale,
// RoPE, dropout or drop path; bidirectional.
ModelConfig plain_block_config(int width, int heads, int mlp_hidden, int depth, double eps);

}  // namespace nepa
