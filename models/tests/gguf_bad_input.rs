//! Malformed GGUF input: clear errors, never a panic or an unbounded
//! allocation. Hand-made corruptions plus a bounded-time proptest fuzz of the
//! parser (random bytes and mutations of a valid file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lucebox_models::config::{Qwen35Config, layer_types_from_interval};
use lucebox_models::error::ModelError;
use lucebox_models::gguf::writer::encode_header;
use lucebox_models::gguf::{
    GgmlType, GgufFile, GgufSource, MetaArray, MetaValue, TensorPlan, check_all_finite,
    parse_header,
};
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};
use proptest::prelude::*;

/// A small valid GGUF (every metadata kind, two tensors) as bytes.
fn small_valid_gguf() -> Vec<u8> {
    let md = vec![
        (
            "general.architecture".to_string(),
            MetaValue::String("qwen35".into()),
        ),
        ("a.u8".into(), MetaValue::U8(7)),
        ("a.i64".into(), MetaValue::I64(-3)),
        ("a.f64".into(), MetaValue::F64(0.5)),
        ("a.bool".into(), MetaValue::Bool(true)),
        (
            "a.strings".into(),
            MetaValue::Array(MetaArray::String(vec!["x".into(), "yz".into()])),
        ),
        (
            "a.nested".into(),
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::U32(vec![1, 2]),
                MetaArray::U32(vec![3]),
            ])),
        ),
    ];
    let plans = vec![
        TensorPlan {
            name: "t.f32".into(),
            dims: vec![4, 2],
            ggml_type: GgmlType::F32,
        },
        TensorPlan {
            name: "t.q8".into(),
            dims: vec![32],
            ggml_type: GgmlType::Q8_0,
        },
    ];
    let (mut buf, sizes) = encode_header(&md, &plans, 32).unwrap();
    for s in sizes {
        buf.extend(std::iter::repeat_n(0x11u8, s as usize));
        while buf.len() % 32 != 0 {
            buf.push(0);
        }
    }
    buf
}

/// Parsed successfully => every tensor lies inside the buffer.
fn check_invariants(buf: &[u8]) {
    if let Ok(h) = parse_header(buf) {
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.size;
            assert!(
                end <= buf.len() as u64,
                "{} ends at {end} > {}",
                t.name,
                buf.len()
            );
        }
    }
}

#[test]
fn valid_small_file_parses_with_all_value_kinds() {
    let buf = small_valid_gguf();
    let h = parse_header(&buf).unwrap();
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.metadata["a.i64"], MetaValue::I64(-3));
    assert_eq!(h.metadata["a.strings"].as_array().unwrap().len(), 2);
    assert_eq!(h.tensors[1].size, 34);
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let buf = small_valid_gguf();
    let h = parse_header(&buf).unwrap();
    // The trailing alignment padding of the last tensor is not required.
    let needed = h
        .tensors
        .iter()
        .map(|t| h.data_offset + t.offset + t.size)
        .max()
        .unwrap() as usize;
    for n in 0..needed {
        if let Ok(h) = parse_header(&buf[..n]) {
            panic!("prefix of {n} bytes parsed: {} tensors", h.tensors.len());
        }
    }
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn absurd_counts_and_lengths_are_rejected_before_allocating() {
    let err = parse_header(&header(u64::MAX, 0)).unwrap_err();
    assert!(err.contains("tensor count"), "{err}");
    let err = parse_header(&header(0, 1 << 60)).unwrap_err();
    assert!(err.contains("metadata count"), "{err}");
    // A key whose length is absurd.
    let mut b = header(0, 1);
    b.extend(u64::MAX.to_le_bytes());
    b.extend([0u8; 16]);
    assert!(
        parse_header(&b)
            .unwrap_err()
            .contains("metadata key length")
    );
    // An array claiming 2^40 strings.
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes()); // array
    b.extend(8u32.to_le_bytes()); // of strings
    b.extend((1u64 << 40).to_le_bytes());
    b.extend([0u8; 64]);
    assert!(parse_header(&b).unwrap_err().contains("array length"));
    // Unknown value type, bad magic, bad version.
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(77u32.to_le_bytes());
    b.extend([0u8; 8]);
    assert!(
        parse_header(&b)
            .unwrap_err()
            .contains("unknown metadata value type 77")
    );
    assert!(
        parse_header(b"GGML\x03\0\0\0")
            .unwrap_err()
            .contains("magic")
    );
    let mut b = header(0, 0);
    b[4] = 9;
    assert!(parse_header(&b).unwrap_err().contains("version 9"));
}

#[test]
fn tensor_index_errors_name_the_tensor() {
    let buf = small_valid_gguf();
    let h = parse_header(&buf).unwrap();
    // Locate the first tensor info: its name is length-prefixed "t.f32".
    let needle = [5u64.to_le_bytes().as_slice(), b"t.f32"].concat();
    let at = buf.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    // n_dims
    let mut b = buf.clone();
    b[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(
        parse_header(&b)
            .unwrap_err()
            .contains("`t.f32` has 9 dimensions")
    );
    // a dimension that overflows
    let mut b = buf.clone();
    b[at + 4..at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_header(&b).unwrap_err().contains("t.f32"));
    // unknown ggml type
    let mut b = buf.clone();
    b[at + 20..at + 24].copy_from_slice(&99u32.to_le_bytes());
    assert!(
        parse_header(&b)
            .unwrap_err()
            .contains("unknown ggml type 99")
    );
    // data beyond the end of the file
    let mut b = buf.clone();
    b[at + 24..at + 32].copy_from_slice(&(1u64 << 32).to_le_bytes());
    assert!(parse_header(&b).unwrap_err().contains("past the end"));
    assert_eq!(h.tensors[0].dims, vec![4, 2]);
}

fn tiny() -> Qwen35Config {
    Qwen35Config {
        name: "tiny".into(),
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 4,
        layer_types: layer_types_from_interval(4, 4),
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 32,
        rope_theta: 1e7,
        partial_rotary_factor: 0.25,
        linear_num_key_heads: 2,
        linear_num_value_heads: 6,
        linear_key_head_dim: 16,
        linear_value_head_dim: 16,
        linear_conv_kernel_dim: 4,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        max_position_embeddings: 1024,
        eos_token_ids: vec![],
    }
}

fn tiny_gguf(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tiny.gguf");
    let opts = SynthOptions {
        format: SynthFormat::Gguf,
        quant: SynthQuant::Q8_0,
        seed: 1,
        vocab_base: None,
    };
    synth(&tiny(), &p, &opts, &mut |_, _| {}).unwrap();
    p
}

/// Byte offset just after the length-prefixed tensor name `name` in the index.
fn info_offset(bytes: &[u8], name: &str) -> usize {
    let needle = [
        (name.len() as u64).to_le_bytes().as_slice(),
        name.as_bytes(),
    ]
    .concat();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len()
}

#[test]
fn source_level_errors_wrong_shape_unsupported_type_missing_tensor_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path());
    let good = std::fs::read(&path).unwrap();
    GgufSource::open(&path).unwrap();
    let bad = dir.path().join("bad.gguf");

    // Wrong shape: ssm_a claims 5 value heads instead of 6.
    let mut b = good.clone();
    let at = info_offset(&b, "blk.0.ssm_a");
    b[at + 4..at + 12].copy_from_slice(&5u64.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    match GgufSource::open(&bad).unwrap_err() {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert!(
                name.contains("A_log") && name.contains("blk.0.ssm_a"),
                "{name}"
            );
            assert_eq!((expected, found), (vec![6], vec![5]));
        }
        e => panic!("unexpected {e}"),
    }

    // A ggml type we cannot decode (Q4_0) on a norm.
    let mut b = good.clone();
    let at = info_offset(&b, "blk.0.attn_norm.weight");
    b[at + 12..at + 16].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    let e = GgufSource::open(&bad).unwrap_err();
    assert!(matches!(e, ModelError::UnsupportedDtype { .. }), "{e}");

    // A renamed (so missing) tensor.
    let mut b = good.clone();
    let at = info_offset(&b, "blk.1.ssm_out.weight");
    b[at - 3] = b'X';
    std::fs::write(&bad, &b).unwrap();
    let e = GgufSource::open(&bad).unwrap_err();
    assert!(
        e.to_string()
            .contains("layers.1.linear_attn.out_proj.weight"),
        "{e}"
    );

    // NaN weights pass open() but not the finiteness check.
    let mut b = good.clone();
    let f = GgufFile::open(&path).unwrap();
    let info = f.tensor_info("blk.2.ssm_dt.bias").unwrap();
    let off = f.absolute_offset(info) + 4;
    b[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    let src = GgufSource::open(&bad).unwrap();
    let e = check_all_finite(&src).unwrap_err();
    assert!(
        matches!(e, ModelError::NonFinite { ref name, .. } if name == "layers.2.linear_attn.dt_bias"),
        "{e}"
    );
    check_all_finite(&GgufSource::open(&path).unwrap()).unwrap();

    // Not a qwen35 file.
    let e = GgufSource::open(dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), valid_prefix in any::<bool>()) {
        let mut b = bytes;
        if valid_prefix && b.len() >= 8 {
            b[..4].copy_from_slice(b"GGUF");
            b[4..8].copy_from_slice(&3u32.to_le_bytes());
        }
        check_invariants(&b);
    }

    #[test]
    fn fuzz_mutated_valid_file(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        big in proptest::option::of((any::<prop::sample::Index>(), any::<u64>())),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut b = small_valid_gguf();
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        if let Some((i, v)) = big {
            let i = i.index(b.len() - 8);
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        if let Some(c) = cut {
            let n = c.index(b.len());
            b.truncate(n);
        }
        check_invariants(&b);
    }
}

#[test]
fn fuzz_mutated_real_checkpoint_through_the_source() {
    // A bounded number of byte mutations of a real (tiny) qwen35 file, all
    // the way through GgufSource::open and reading every tensor.
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_gguf(dir.path());
    let good = std::fs::read(&path).unwrap();
    let header_len = GgufFile::open(&path).unwrap().header.data_offset as usize;
    let bad = dir.path().join("m.gguf");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut opened = 0;
    for _ in 0..150 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % header_len;
            b[i] = next() as u8;
        }
        std::fs::write(&bad, &b).unwrap();
        if let Ok(src) = GgufSource::open(&bad) {
            opened += 1;
            use lucebox_models::weights::WeightSource;
            for spec in lucebox_models::gguf::tensor_specs(src.config()) {
                let _ = src.tensor(&spec.canonical).and_then(|t| t.to_f32());
            }
        }
    }
    println!("mutated checkpoints that still opened: {opened}/150");
}
