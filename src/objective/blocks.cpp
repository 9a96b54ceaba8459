#include "nepa/objective/blocks.h"

namespace nepa {

ModelConfig plain_block_config(int width, int heads, int mlp_hidden, int depth, double eps) {
  ModelConfig c;
  c.hidden_size = width;
  c.num_attention_heads = heads;
  c.intermediate_size = mlp_hidden;
  c.num_hidden_layers = depth;
  c.hidden_act = "gelu";
  c.use_gated_mlp = false;
  c.qkv_bias = true;
  c.qk_norm = false;
  c.layerscale_value.reset();
  c.layer_norm_eps = eps;
  c.use_rope = false;
  c.pos_embed_rescale.reset();
  c.is_causal = false;
  c.drop_path_prob = 0.0;
  c.hidden_dropout_prob = 0.0;
  c.attention_probs_dropout_prob = 0.0;
  return c;
}

}  // namespace nepa
