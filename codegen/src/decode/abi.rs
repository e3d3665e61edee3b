//! The ABI between the generated decode megakernel and the runtime: the
//! weight table, the buffer table and the scalar launch parameters. Both the
//! CUDA declarations and the Rust types come from the descriptions here, so
//! this module is the single source of truth.

use serde::{Deserialize, Serialize};

use lucebox_models::config::{LayerType, Qwen35Config};
use lucebox_schedules::Schedule;

/// Element type the runtime uploads a weight as (converting from the
/// checkpoint's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDType {
    Bf16,
    F32,
}

/// Entry `index` of the device table `const void* const* weights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightSlot {
    pub index: usize,
    /// HF name without prefix, HF semantics (norm weights zero-centred, raw
    /// `A_log`, conv1d `[conv_dim, 1, K]`).
    pub canonical_name: String,
    /// Shape as stored on the device (the HF shape, reversed when `transposed`).
    pub shape: Vec<usize>,
    pub dtype: WeightDType,
    /// A second copy of a 2-D weight, stored transposed (`[cols][rows]` of
    /// the HF matrix): `mlp.down_proj.weight` for the fused MLP. Lookups by
    /// name find the untransposed slot first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transposed: bool,
}

impl WeightSlot {
    pub fn bytes(&self) -> u64 {
        let n: usize = self.shape.iter().product();
        n as u64
            * match self.dtype {
                WeightDType::Bf16 => 2,
                WeightDType::F32 => 4,
            }
    }
}

/// How the runtime initialises a buffer when it allocates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferInit {
    /// Zero at allocation; must also be zeroed at the start of every request.
    ZeroPerRequest,
    /// Zero at allocation only (self-resetting counters, monotonic barrier).
    ZeroOnce,
    /// Filled with 0xFF bytes (f32 NaN) at allocation: every read is
    /// preceded by a write in the kernel, poison makes violations visible.
    Poison,
    /// Written by the host before each launch (prompt ids).
    HostInput,
    /// Read by the host after each launch (generated ids, status, logits).
    HostOutput,
}

/// Entry `index` of the device table `void* const* buffers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferSlot {
    pub index: usize,
    /// Also the CUDA constant `BUF_<NAME>` (upper-cased).
    pub name: String,
    pub bytes: u64,
    pub init: BufferInit,
    pub doc: String,
}

/// Type of one scalar launch parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    U32,
    F32,
    U64,
    U32Array(usize),
}

impl ParamType {
    pub fn size(self) -> usize {
        match self {
            ParamType::U32 | ParamType::F32 => 4,
            ParamType::U64 => 8,
            ParamType::U32Array(n) => 4 * n,
        }
    }
    pub fn align(self) -> usize {
        match self {
            ParamType::U64 => 8,
            _ => 4,
        }
    }
    fn cuda(self, name: &str) -> String {
        match self {
            ParamType::U32 => format!("u32 {name}"),
            ParamType::F32 => format!("float {name}"),
            ParamType::U64 => format!("u64 {name}"),
            ParamType::U32Array(n) => format!("u32 {name}[{n}]"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamField {
    pub name: &'static str,
    pub ty: ParamType,
    pub offset: usize,
    pub doc: &'static str,
}

/// Layout of the by-value kernel parameter `DecodeParams`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamsLayout {
    pub fields: Vec<ParamField>,
    pub size: usize,
}

/// Most EOS ids a launch checks.
pub const MAX_EOS_IDS: usize = 4;

/// `DecodeParams::flags`: write the raw (pre-penalty) f32 logits of the
/// last sampled step to the `logits` buffer.
pub const FLAG_WRITE_LOGITS: u32 = 1;
/// `DecodeParams::flags`: count this launch's input tokens in the penalty
/// counts (set for new prompt tokens; clear when feeding back the last
/// generated token, which was counted when it was sampled).
pub const FLAG_COUNT_INPUT: u32 = 2;
/// `DecodeParams::flags`: the `resid` buffer already holds the residual
/// stream after the last layer for the launch's first input token (written
/// by prefill): that step skips the embedding and the layers and only runs
/// the final norm, LM head and sampler. Its position must be the prompt's
/// last (`start_pos` = prompt length - 1) and its KV/GDN/conv state already
/// includes that token.
pub const FLAG_RESID_READY: u32 = 4;

/// Status words (buffer `status`, u32 each).
pub const STATUS_N_GENERATED: usize = 0;
pub const STATUS_ERROR: usize = 1;
pub const STATUS_NEXT_POS: usize = 2;
pub const STATUS_STOP_REASON: usize = 3;
pub const STATUS_LAST_TOKEN: usize = 4;
pub const STATUS_WORDS: usize = 8;

/// `status[STATUS_ERROR]` codes.
pub const ERR_NONE: u32 = 0;
pub const ERR_CONTEXT_FULL: u32 = 1;
pub const ERR_NO_INPUT: u32 = 2;
pub const ERR_BAD_TOKEN: u32 = 3;

/// `status[STATUS_STOP_REASON]` codes.
pub const STOP_INPUT_DONE: u32 = 1;
pub const STOP_EOS: u32 = 2;
pub const STOP_MAX_TOKENS: u32 = 3;
pub const STOP_ERROR: u32 = 4;

/// The scalar launch parameters, passed by value. Mirrors the CUDA struct
/// emitted from [`params_layout`] (checked by a test).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeParams {
    /// Position of the first input token of this launch.
    pub start_pos: u32,
    /// Input tokens in `prompt_ids` (>= 1).
    pub n_input: u32,
    /// Tokens to generate after the last input (0: only absorb the input).
    pub max_new_tokens: u32,
    /// FLAG_* bits.
    pub flags: u32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// <= 0: greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub n_eos: u32,
    pub eos_ids: [u32; MAX_EOS_IDS],
    pub _pad: u32,
    pub seed: u64,
}

/// The description both the Rust struct and the CUDA struct follow.
pub fn params_layout() -> ParamsLayout {
    let spec: &[(&'static str, ParamType, &'static str)] = &[
        (
            "start_pos",
            ParamType::U32,
            "position of the first input token",
        ),
        ("n_input", ParamType::U32, "tokens in prompt_ids (>= 1)"),
        (
            "max_new_tokens",
            ParamType::U32,
            "tokens to generate (0: absorb input only)",
        ),
        ("flags", ParamType::U32, "FLAG_* bits"),
        ("top_k", ParamType::U32, "0 disables"),
        ("temperature", ParamType::F32, "<= 0: greedy"),
        ("top_p", ParamType::F32, "1 disables"),
        (
            "repetition_penalty",
            ParamType::F32,
            "1 disables (HF semantics)",
        ),
        (
            "presence_penalty",
            ParamType::F32,
            "0 disables (OpenAI semantics)",
        ),
        (
            "frequency_penalty",
            ParamType::F32,
            "0 disables (OpenAI semantics)",
        ),
        ("n_eos", ParamType::U32, "valid entries of eos_ids"),
        ("eos_ids", ParamType::U32Array(MAX_EOS_IDS), "stop tokens"),
        ("_pad", ParamType::U32, "keeps seed 8-byte aligned"),
        ("seed", ParamType::U64, "sampler seed (counter-based RNG)"),
    ];
    let mut off: usize = 0;
    let mut fields = Vec::new();
    let mut align: usize = 1;
    for &(name, ty, doc) in spec {
        off = off.next_multiple_of(ty.align());
        align = align.max(ty.align());
        fields.push(ParamField {
            name,
            ty,
            offset: off,
            doc,
        });
        off += ty.size();
    }
    ParamsLayout {
        fields,
        size: off.next_multiple_of(align),
    }
}

impl ParamsLayout {
    /// `struct DecodeParams { ... };` with static_asserts of the layout.
    pub fn cuda(&self) -> String {
        let mut s = String::from(
            "// ---- launch parameters (by value; mirrors lucebox_codegen::decode::DecodeParams) ----\nstruct DecodeParams {\n",
        );
        for f in &self.fields {
            s.push_str(&format!(
                "    {:<28} // @{:>2}: {}\n",
                format!("{};", f.ty.cuda(f.name)),
                f.offset,
                f.doc
            ));
        }
        s.push_str("};\n");
        s.push_str(&format!(
            "static_assert(sizeof(DecodeParams) == {}, \"DecodeParams layout\");\n",
            self.size
        ));
        s
    }
}

/// Everything the runtime needs to build and launch the decode megakernel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeAbi {
    pub kernel_name: String,
    pub grid_blocks: u32,
    pub threads_per_block: u32,
    pub dynamic_smem_bytes: u32,
    /// The kernel must be launched cooperatively (all blocks co-resident).
    pub cooperative: bool,
    pub weights: Vec<WeightSlot>,
    pub buffers: Vec<BufferSlot>,
    pub params_layout: ParamsLayout,
    /// Index of the first weight of each layer in `weights`.
    pub layer_weight_base: Vec<usize>,
    pub max_context: u32,
    pub sync_points_per_token: u32,
}

impl DecodeAbi {
    pub fn weight(&self, name: &str) -> Option<&WeightSlot> {
        self.weights.iter().find(|w| w.canonical_name == name)
    }
    pub fn buffer(&self, name: &str) -> Option<&BufferSlot> {
        self.buffers.iter().find(|b| b.name == name)
    }
}

/// Per-layer weight order (offsets from the layer's base), shared by both
/// layer types first, then type-specific.
pub const LAYER_COMMON: &[&str] = &[
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];
pub const LAYER_GDN: &[&str] = &[
    "linear_attn.in_proj_qkv.weight",
    "linear_attn.in_proj_z.weight",
    "linear_attn.in_proj_b.weight",
    "linear_attn.in_proj_a.weight",
    "linear_attn.conv1d.weight",
    "linear_attn.dt_bias",
    "linear_attn.A_log",
    "linear_attn.norm.weight",
    "linear_attn.out_proj.weight",
];
pub const LAYER_ATTN: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
];

fn layer_weight_shape(cfg: &Qwen35Config, name: &str) -> (Vec<usize>, WeightDType) {
    use WeightDType::*;
    let d = cfg.hidden_size;
    match name {
        "input_layernorm.weight" | "post_attention_layernorm.weight" => (vec![d], F32),
        "mlp.gate_proj.weight" | "mlp.up_proj.weight" => (vec![cfg.intermediate_size, d], Bf16),
        "mlp.down_proj.weight" => (vec![d, cfg.intermediate_size], Bf16),
        "linear_attn.in_proj_qkv.weight" => (vec![cfg.conv_dim(), d], Bf16),
        "linear_attn.in_proj_z.weight" => (vec![cfg.linear_value_dim(), d], Bf16),
        "linear_attn.in_proj_b.weight" | "linear_attn.in_proj_a.weight" => {
            (vec![cfg.linear_num_value_heads, d], Bf16)
        }
        "linear_attn.conv1d.weight" => (vec![cfg.conv_dim(), 1, cfg.linear_conv_kernel_dim], F32),
        "linear_attn.dt_bias" | "linear_attn.A_log" => (vec![cfg.linear_num_value_heads], F32),
        "linear_attn.norm.weight" => (vec![cfg.linear_value_head_dim], F32),
        "linear_attn.out_proj.weight" => (vec![d, cfg.linear_value_dim()], Bf16),
        "self_attn.q_proj.weight" => (vec![cfg.q_proj_out(), d], Bf16),
        "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => (vec![cfg.kv_dim(), d], Bf16),
        "self_attn.o_proj.weight" => (vec![d, cfg.attn_out_dim()], Bf16),
        "self_attn.q_norm.weight" | "self_attn.k_norm.weight" => (vec![cfg.head_dim], F32),
        other => unreachable!("no shape for layer weight {other}"),
    }
}

/// Weight table: `embed_tokens.weight`, `norm.weight`, `lm_head.weight`
/// (untied only), then each layer's weights in LAYER_COMMON + type order.
pub fn weight_slots(cfg: &Qwen35Config) -> (Vec<WeightSlot>, Vec<usize>) {
    let mut w: Vec<WeightSlot> = Vec::new();
    fn next_index(w: &[WeightSlot]) -> usize {
        w.len()
    }
    let push = |w: &mut Vec<WeightSlot>, name: String, shape: Vec<usize>, dtype: WeightDType| {
        let index = w.len();
        w.push(WeightSlot {
            index,
            canonical_name: name,
            shape,
            dtype,
            transposed: false,
        });
    };
    push(
        &mut w,
        "embed_tokens.weight".into(),
        vec![cfg.vocab_size, cfg.hidden_size],
        WeightDType::Bf16,
    );
    push(
        &mut w,
        "norm.weight".into(),
        vec![cfg.hidden_size],
        WeightDType::F32,
    );
    if !cfg.tie_word_embeddings {
        push(
            &mut w,
            "lm_head.weight".into(),
            vec![cfg.vocab_size, cfg.hidden_size],
            WeightDType::Bf16,
        );
    }
    let mut bases = Vec::new();
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        bases.push(next_index(&w));
        let specific = match ty {
            LayerType::LinearAttention => LAYER_GDN,
            LayerType::FullAttention => LAYER_ATTN,
        };
        for name in LAYER_COMMON.iter().chain(specific) {
            let (shape, dt) = layer_weight_shape(cfg, name);
            push(&mut w, format!("layers.{i}.{name}"), shape, dt);
        }
    }
    (w, bases)
}

/// The weight table of a schedule: [`weight_slots`], then transposed copies,
/// in layer order: with `decode.mlp = fused_split_k` every layer's
/// `mlp.down_proj.weight` (`[intermediate][hidden]`), then with
/// `decode.gdn_out = with_recurrence` every GDN layer's
/// `linear_attn.out_proj.weight` (`[value dim][hidden]`).
pub fn weight_slots_for(cfg: &Qwen35Config, s: &Schedule) -> (Vec<WeightSlot>, Vec<usize>) {
    let (mut w, bases) = weight_slots(cfg);
    let mut push_transposed = |name: String, rows: usize, cols: usize| {
        w.push(WeightSlot {
            index: w.len(),
            canonical_name: name,
            shape: vec![cols, rows],
            dtype: WeightDType::Bf16,
            transposed: true,
        })
    };
    if super::fused_mlp(s) {
        for l in 0..cfg.num_hidden_layers {
            let name = format!("layers.{l}.mlp.down_proj.weight");
            push_transposed(name, cfg.hidden_size, cfg.intermediate_size);
        }
    }
    if super::gdn_out_fused(s) {
        for (l, ty) in cfg.layer_types.iter().enumerate() {
            if *ty == LayerType::LinearAttention {
                let name = format!("layers.{l}.linear_attn.out_proj.weight");
                push_transposed(name, cfg.hidden_size, cfg.linear_value_dim());
            }
        }
    }
    (w, bases)
}

/// Chunks one level-1 attention merge combines.
pub const ATT_SUPER: u64 = 8;

/// Tile counters: the LM head's, one per attention head (level-2 merge),
/// one per (head, super-chunk) (level-1 merge), then the ready counters of
/// the GDN in_proj rows (per k-head, per v-head) and of the attention
/// projections (per q-head, per kv-head); at least 64.
pub fn tile_counter_words(cfg: &Qwen35Config, z: &DecodeSizes) -> u64 {
    let att = (cfg.num_attention_heads + cfg.num_key_value_heads) as u64;
    (att_ready_counter_offset(cfg, z) + att * READY_STRIDE).max(64)
}

/// Index of the first attention ready counter (after the GDN ones).
pub fn att_ready_counter_offset(cfg: &Qwen35Config, z: &DecodeSizes) -> u64 {
    gdn_ready_counter_offset(cfg, z)
        + (cfg.linear_num_key_heads + cfg.linear_num_value_heads) as u64 * READY_STRIDE
}

/// Words between two ready counters: one 128-byte line each, so the adds
/// and polls of different heads go to different L2 slices.
pub const READY_STRIDE: u64 = 32;

/// Index of the first GDN ready counter in the tile counter table (on a
/// 128-byte line boundary).
pub fn gdn_ready_counter_offset(cfg: &Qwen35Config, z: &DecodeSizes) -> u64 {
    let heads = cfg.num_attention_heads as u64;
    (1 + heads + heads * z.att_max_supers).next_multiple_of(READY_STRIDE)
}

/// Derived sizes of the decode kernel's state and scratch.
pub struct DecodeSizes {
    pub att_max_chunks: u64,
    /// Level-1 merge groups of the decode attention (ATT_SUPER chunks each).
    pub att_max_supers: u64,
    pub sample_pool: u64,
}

pub fn decode_sizes(_cfg: &Qwen35Config, s: &Schedule) -> DecodeSizes {
    let att_max_chunks = (s.max_context as u64).div_ceil(s.decode.attn_kv_chunk as u64);
    DecodeSizes {
        att_max_chunks,
        att_max_supers: att_max_chunks.div_ceil(ATT_SUPER),
        sample_pool: s.grid_blocks() as u64 * s.decode.sample_candidates_per_block as u64,
    }
}

/// Launch steps (tokens absorbed or generated, counted from the launch's
/// first input) whose phase times are recorded when `decode.profile_phases`
/// is on; later steps run unrecorded.
pub const PROFILE_MAX_STEPS: u32 = 512;

/// Buffer table, in index order.
pub fn buffer_slots(cfg: &Qwen35Config, s: &Schedule) -> Vec<BufferSlot> {
    use BufferInit::*;
    let z = decode_sizes(cfg, s);
    let f = 4u64;
    let ctx = s.max_context as u64;
    let n_full = cfg.num_full_attention_layers() as u64;
    let n_gdn = cfg.num_linear_attention_layers() as u64;
    let hv = cfg.linear_num_value_heads as u64;
    let spec: Vec<(&str, u64, BufferInit, &str)> = vec![
        (
            "k_cache",
            n_full * cfg.num_key_value_heads as u64 * ctx * cfg.head_dim as u64 * 2,
            ZeroPerRequest,
            "bf16 [full layers][kv heads][max_ctx][head_dim], post k_norm + RoPE",
        ),
        (
            "v_cache",
            n_full * cfg.num_key_value_heads as u64 * ctx * cfg.head_dim as u64 * 2,
            ZeroPerRequest,
            "bf16 [full layers][kv heads][max_ctx][head_dim]",
        ),
        (
            "gdn_state",
            n_gdn * hv * cfg.linear_key_head_dim as u64 * cfg.linear_value_head_dim as u64 * f,
            ZeroPerRequest,
            "f32 [gdn layers][Hv][dk][dv] (HF layout S[h, key, value])",
        ),
        (
            "conv_state",
            n_gdn * cfg.conv_dim() as u64 * (cfg.linear_conv_kernel_dim as u64 - 1) * f,
            ZeroPerRequest,
            "f32 [gdn layers][conv_dim][K-1], oldest input first",
        ),
        (
            "token_counts",
            cfg.vocab_size as u64 * 4,
            ZeroPerRequest,
            "u32 [vocab]: bit 31 = seen in the input, bits 0..30 = times generated (penalties)",
        ),
        (
            "prompt_ids",
            ctx * 4,
            HostInput,
            "u32 [max_ctx]: input tokens of this launch",
        ),
        (
            "out_tokens",
            ctx * 4,
            HostOutput,
            "u32 [max_ctx]: ids generated by this launch, in order",
        ),
        (
            "status",
            super::abi::STATUS_WORDS as u64 * 4,
            HostOutput,
            "u32 [8]: n_generated, error, next_pos, stop_reason, last_token",
        ),
        (
            "logits",
            cfg.vocab_size as u64 * f,
            HostOutput,
            "f32 [vocab]: raw logits of the last sampled step (FLAG_WRITE_LOGITS)",
        ),
        (
            "next_token",
            4,
            Poison,
            "u32: the token sampled last, fed back on device",
        ),
        (
            "grid_barrier",
            8,
            ZeroOnce,
            "u64 monotonic arrival counter of the grid barrier",
        ),
        (
            "tile_counters",
            tile_counter_words(cfg, &z) * 4,
            ZeroOnce,
            "u32: self-resetting last-arrival counters (LM head, attention merges) and per-head ready counters",
        ),
        if super::fused_mlp(s) {
            (
                "resid",
                2 * cfg.hidden_size as u64 * f,
                Poison,
                "f32 [2][hidden]: residual stream, then its copy after the token mixer (the fused MLP normalises the copy and adds into the stream)",
            )
        } else {
            (
                "resid",
                cfg.hidden_size as u64 * f,
                Poison,
                "f32 [hidden]: residual stream",
            )
        },
        (
            "gdn_qkv",
            cfg.conv_dim() as u64 * f,
            Poison,
            "f32 [conv_dim]: post-conv q|k|v",
        ),
        (
            "gdn_z",
            cfg.linear_value_dim() as u64 * f,
            Poison,
            "f32 [Vd]: output gate z",
        ),
        ("gdn_beta", hv * f, Poison, "f32 [Hv]: sigmoid(b)"),
        ("gdn_g", hv * f, Poison, "f32 [Hv]: log-decay g"),
        (
            "gdn_o",
            cfg.linear_value_dim() as u64 * f,
            Poison,
            "f32 [Vd]: recurrence output",
        ),
        (
            "att_qg",
            cfg.q_proj_out() as u64 * f,
            Poison,
            "f32 [2*H*hd]: q_proj output",
        ),
        (
            "att_k",
            cfg.kv_dim() as u64 * f,
            Poison,
            "f32 [Hkv*hd]: k_proj output",
        ),
        (
            "att_v",
            cfg.kv_dim() as u64 * f,
            Poison,
            "f32 [Hkv*hd]: v_proj output",
        ),
        (
            "att_part_acc",
            cfg.num_attention_heads as u64 * z.att_max_chunks * cfg.head_dim as u64 * f,
            Poison,
            "f32 [H][max chunks][hd]: unnormalised chunk outputs",
        ),
        (
            "att_part_ml",
            cfg.num_attention_heads as u64 * z.att_max_chunks * 2 * f,
            Poison,
            "f32 [H][max chunks][2]: chunk max and denominator",
        ),
        (
            "att_out",
            cfg.attn_out_dim() as u64 * f,
            Poison,
            "f32 [H*hd]: gated attention output",
        ),
        (
            "mlp_h",
            cfg.intermediate_size as u64 * f,
            Poison,
            "f32 [intermediate]: silu(gate)*up",
        ),
        (
            "lm_cand_v",
            z.sample_pool * f,
            Poison,
            "f32 [grid*cand]: per-block candidate logits",
        ),
        (
            "lm_cand_i",
            z.sample_pool * 4,
            Poison,
            "u32 [grid*cand]: per-block candidate ids",
        ),
        (
            "lm_block_stats",
            s.grid_blocks() as u64 * 2 * f,
            Poison,
            "f32 [grid][2]: softmax max and sum per block",
        ),
        (
            "sampler_draws",
            8,
            ZeroPerRequest,
            "u64: random draws made in this request (SplitMix64 counter)",
        ),
    ];
    let mut spec = spec;
    if s.decode.profile_phases {
        let phases = super::sync_points_per_token(cfg, s) as u64;
        let steps = PROFILE_MAX_STEPS as u64;
        spec.push((
            "phase_times",
            steps * (phases + 1) * 8,
            ZeroPerRequest,
            "u64 [PROFILE_MAX_STEPS][N_PHASES+1]: %globaltimer ns (block 0) at each step's start, then after each phase's barrier; 0 = not run",
        ));
        spec.push((
            "phase_waits",
            steps * phases * 2 * 8,
            ZeroPerRequest,
            "u64 [PROFILE_MAX_STEPS][N_PHASES][2]: max and sum over blocks of the ns spent waiting in the phase's barrier",
        ));
    }
    spec.into_iter()
        .enumerate()
        .map(|(index, (name, bytes, init, doc))| BufferSlot {
            index,
            name: name.into(),
            bytes,
            init,
            doc: doc.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn rust_params_struct_matches_description() {
        let l = params_layout();
        assert_eq!(size_of::<DecodeParams>(), l.size);
        let off = |n: &str| l.fields.iter().find(|f| f.name == n).map(|f| f.offset);
        assert_eq!(off("start_pos"), Some(offset_of!(DecodeParams, start_pos)));
        assert_eq!(off("n_input"), Some(offset_of!(DecodeParams, n_input)));
        assert_eq!(
            off("max_new_tokens"),
            Some(offset_of!(DecodeParams, max_new_tokens))
        );
        assert_eq!(off("flags"), Some(offset_of!(DecodeParams, flags)));
        assert_eq!(off("top_k"), Some(offset_of!(DecodeParams, top_k)));
        assert_eq!(
            off("temperature"),
            Some(offset_of!(DecodeParams, temperature))
        );
        assert_eq!(off("top_p"), Some(offset_of!(DecodeParams, top_p)));
        assert_eq!(
            off("repetition_penalty"),
            Some(offset_of!(DecodeParams, repetition_penalty))
        );
        assert_eq!(
            off("presence_penalty"),
            Some(offset_of!(DecodeParams, presence_penalty))
        );
        assert_eq!(
            off("frequency_penalty"),
            Some(offset_of!(DecodeParams, frequency_penalty))
        );
        assert_eq!(off("n_eos"), Some(offset_of!(DecodeParams, n_eos)));
        assert_eq!(off("eos_ids"), Some(offset_of!(DecodeParams, eos_ids)));
        assert_eq!(off("seed"), Some(offset_of!(DecodeParams, seed)));
        assert_eq!(l.fields.len(), 14);
    }

    #[test]
    fn weight_table_covers_every_text_tensor() {
        let c = Qwen35Config::qwen35_0_8b();
        let (w, bases) = weight_slots(&c);
        // 320 text tensors in the 0.8B checkpoint (spec §2.5), lm_head tied.
        assert_eq!(w.len(), 320);
        assert_eq!(bases.len(), 24);
        let bytes: u64 = w
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64 * 2)
            .sum();
        assert_eq!(bytes, 1_504_786_048);
        assert_eq!(
            w[bases[3]].canonical_name,
            "layers.3.input_layernorm.weight"
        );
        assert!(
            w.iter()
                .any(|s| s.canonical_name == "layers.3.self_attn.q_norm.weight")
        );
        assert!(!w.iter().any(|s| s.canonical_name == "lm_head.weight"));
        let c27 = Qwen35Config::qwen35_27b();
        let (w27, _) = weight_slots(&c27);
        assert_eq!(w27.len(), 851); // 851 text tensors incl. lm_head
        assert!(w27.iter().any(|s| s.canonical_name == "lm_head.weight"));
    }
}
