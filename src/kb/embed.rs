//! Sentence vectors from all-MiniLM-L6-v2, run in plain Rust.
//!
//! The model is a 6-layer BERT (hidden 384, 12 heads, FFN 1536), 22.7 M
//! float32 parameters read from its `model.safetensors`. Its own
//! `tokenizer.json` is read by Hugging Face's `tokenizers` crate, so token ids
//! are exactly the reference tokenizer's. The forward pass is a few dozen
//! matrix products done by `matrixmultiply` (SIMD SGEMM); sentence vectors are
//! the attention-masked mean of the last hidden states, L2-normalised, as the
//! model's `1_Pooling/config.json` and sentence-transformers say.
//!
//! Why not candle or ONNX Runtime: the model is small and fixed, the whole
//! forward pass is ~150 lines here, and the two matrix crates cost seconds of
//! build time instead of minutes. `tests/kb.rs` checks the vectors against a
//! float64 reference (`scripts/minilm_reference.py`).
//!
//! An [`Embedder`] is immutable once loaded and `Sync`: callers on several
//! threads share one copy of the weights. Each call allocates its own scratch.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tokenizers::Tokenizer;

/// Dimensions of a sentence vector.
pub const DIM: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = DIM / HEADS;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const LN_EPS: f32 = 1e-12;
/// sentence-transformers' `max_seq_length` for this model; longer text is cut.
pub const MAX_TOKENS: usize = 256;

/// Files of the model under the models directory (see models/manifest.toml).
pub const WEIGHTS_FILE: &str = "minilm/model.safetensors";
pub const TOKENIZER_FILE: &str = "minilm/tokenizer.json";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model file {path} is missing; run `voxloop models fetch`")]
    Missing { path: PathBuf },
    #[error("cannot read embedding model {path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("cannot tokenize text: {0}")]
    Tokenize(String),
}

struct Linear {
    /// `[out][in]`, row-major, as PyTorch stores it.
    w: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_attn: Norm,
    up: Linear,
    down: Linear,
    ln_out: Norm,
}

pub struct Embedder {
    tokenizer: Tokenizer,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    ln_embed: Norm,
    layers: Vec<Layer>,
}

impl Embedder {
    /// Loads the weights and tokenizer from `models_dir`.
    pub fn load(models_dir: &Path) -> Result<Embedder, EmbedError> {
        let wpath = models_dir.join(WEIGHTS_FILE);
        let tpath = models_dir.join(TOKENIZER_FILE);
        for p in [&wpath, &tpath] {
            if !p.exists() {
                return Err(EmbedError::Missing { path: p.clone() });
            }
        }
        let load_err = |path: &Path, detail: String| EmbedError::Load {
            path: path.to_path_buf(),
            detail,
        };
        let mut tokenizer =
            Tokenizer::from_file(&tpath).map_err(|e| load_err(&tpath, e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err(&tpath, e.to_string()))?;
        let bytes = std::fs::read(&wpath).map_err(|e| load_err(&wpath, e.to_string()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| load_err(&wpath, e.to_string()))?;
        let t = |name: &str, shape: &[usize]| -> Result<Vec<f32>, EmbedError> {
            let v = st
                .tensor(name)
                .map_err(|e| load_err(&wpath, format!("{name}: {e}")))?;
            if v.dtype() != Dtype::F32 || v.shape() != shape {
                return Err(load_err(
                    &wpath,
                    format!(
                        "{name}: expected F32 {shape:?}, found {:?} {:?}",
                        v.dtype(),
                        v.shape()
                    ),
                ));
            }
            Ok(v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let lin = |p: &str, n_out: usize, n_in: usize| -> Result<Linear, EmbedError> {
            Ok(Linear {
                w: t(&format!("{p}.weight"), &[n_out, n_in])?,
                b: t(&format!("{p}.bias"), &[n_out])?,
                n_in,
                n_out,
            })
        };
        let norm = |p: &str| -> Result<Norm, EmbedError> {
            Ok(Norm {
                w: t(&format!("{p}.weight"), &[DIM])?,
                b: t(&format!("{p}.bias"), &[DIM])?,
            })
        };
        let mut layers = Vec::with_capacity(LAYERS);
        for i in 0..LAYERS {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                q: lin(&format!("{p}.attention.self.query"), DIM, DIM)?,
                k: lin(&format!("{p}.attention.self.key"), DIM, DIM)?,
                v: lin(&format!("{p}.attention.self.value"), DIM, DIM)?,
                o: lin(&format!("{p}.attention.output.dense"), DIM, DIM)?,
                ln_attn: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: lin(&format!("{p}.intermediate.dense"), FFN, DIM)?,
                down: lin(&format!("{p}.output.dense"), DIM, FFN)?,
                ln_out: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let vocab = tokenizer.get_vocab_size(true);
        let tt = t("embeddings.token_type_embeddings.weight", &[2, DIM])?;
        Ok(Embedder {
            word: t("embeddings.word_embeddings.weight", &[vocab, DIM])?,
            position: t("embeddings.position_embeddings.weight", &[512, DIM])?,
            token_type0: tt[..DIM].to_vec(),
            ln_embed: norm("embeddings.LayerNorm")?,
            layers,
            tokenizer,
        })
    }

    /// Token ids of `text` as the model sees them: `[CLS] … [SEP]`, cut to
    /// [`MAX_TOKENS`].
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The unit-length sentence vector of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let ids = self.token_ids(text)?;
        Ok(self.embed_ids(&ids))
    }

    /// The unit-length sentence vector of already tokenized text.
    pub fn embed_ids(&self, ids: &[u32]) -> Vec<f32> {
        let n = ids.len().min(MAX_TOKENS);
        let vocab = self.word.len() / DIM;
        let mut x = vec![0f32; n * DIM];
        for (i, &id) in ids[..n].iter().enumerate() {
            // The tokenizer only yields ids of its own vocabulary; an
            // out-of-range id (a foreign caller) reads as [UNK] rather than panic.
            let id = if (id as usize) < vocab {
                id as usize
            } else {
                100
            };
            let row = &mut x[i * DIM..(i + 1) * DIM];
            let (w, p) = (
                &self.word[id * DIM..][..DIM],
                &self.position[i * DIM..][..DIM],
            );
            for d in 0..DIM {
                row[d] = w[d] + p[d] + self.token_type0[d];
            }
        }
        layer_norm(&mut x, &self.ln_embed);
        let mut s = Scratch::new(n);
        for layer in &self.layers {
            layer.forward(&mut x, &mut s, n);
        }
        let mut v = vec![0f32; DIM];
        for row in x.chunks_exact(DIM) {
            for d in 0..DIM {
                v[d] += row[d];
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|a| *a /= norm);
        v
    }
}

struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    scores: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch {
            q: vec![0.0; n * DIM],
            k: vec![0.0; n * DIM],
            v: vec![0.0; n * DIM],
            ctx: vec![0.0; n * DIM],
            scores: vec![0.0; n * n],
            tmp: vec![0.0; n * DIM],
            ffn: vec![0.0; n * FFN],
        }
    }
}

impl Layer {
    fn forward(&self, x: &mut [f32], s: &mut Scratch, n: usize) {
        self.q.apply(x, &mut s.q, n);
        self.k.apply(x, &mut s.k, n);
        self.v.apply(x, &mut s.v, n);
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        for h in 0..HEADS {
            let off = h * HEAD_DIM;
            // scores = Q_h · K_hᵀ, both read in place from the [n][DIM] rows.
            // SAFETY (all three sgemm calls): every index the strides reach is
            // inside its slice: rows < n, columns < HEAD_DIM (or n), offsets < DIM.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    HEAD_DIM,
                    n,
                    scale,
                    s.q.as_ptr().add(off),
                    DIM as isize,
                    1,
                    s.k.as_ptr().add(off),
                    1,
                    DIM as isize,
                    0.0,
                    s.scores.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
            for row in s.scores.chunks_exact_mut(n) {
                softmax(row);
            }
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    n,
                    HEAD_DIM,
                    1.0,
                    s.scores.as_ptr(),
                    n as isize,
                    1,
                    s.v.as_ptr().add(off),
                    DIM as isize,
                    1,
                    0.0,
                    s.ctx.as_mut_ptr().add(off),
                    DIM as isize,
                    1,
                );
            }
        }
        self.o.apply(&s.ctx, &mut s.tmp, n);
        add_into(x, &s.tmp);
        layer_norm(x, &self.ln_attn);
        self.up.apply(x, &mut s.ffn, n);
        s.ffn.iter_mut().for_each(|a| *a = gelu(*a));
        self.down.apply(&s.ffn, &mut s.tmp, n);
        add_into(x, &s.tmp);
        layer_norm(x, &self.ln_out);
    }
}

impl Linear {
    /// `out[n][n_out] = x[n][n_in] · Wᵀ + b`.
    fn apply(&self, x: &[f32], out: &mut [f32], n: usize) {
        assert!(x.len() >= n * self.n_in && out.len() >= n * self.n_out);
        // SAFETY: the asserts above bound every row the strides reach; W is
        // [n_out][n_in], read transposed with row stride 1, column stride n_in.
        unsafe {
            matrixmultiply::sgemm(
                n,
                self.n_in,
                self.n_out,
                1.0,
                x.as_ptr(),
                self.n_in as isize,
                1,
                self.w.as_ptr(),
                1,
                self.n_in as isize,
                0.0,
                out.as_mut_ptr(),
                self.n_out as isize,
                1,
            );
        }
        for row in out[..n * self.n_out].chunks_exact_mut(self.n_out) {
            add_into(row, &self.b);
        }
    }
}

fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

fn layer_norm(x: &mut [f32], n: &Norm) {
    for row in x.chunks_exact_mut(DIM) {
        let mean = row.iter().sum::<f32>() / DIM as f32;
        let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / DIM as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for ((a, w), b) in row.iter_mut().zip(&n.w).zip(&n.b) {
            *a = (*a - mean) * inv * w + b;
        }
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for a in row.iter_mut() {
        *a = (*a - max).exp();
        sum += *a;
    }
    row.iter_mut().for_each(|a| *a /= sum);
}

/// BERT's exact GELU, `x·Φ(x)`, with erf from Abramowitz & Stegun 7.1.26
/// (absolute error < 1.5e-7, below float32 noise at these magnitudes).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn erf(x: f32) -> f32 {
    let (sign, x) = if x < 0.0 {
        (-1.0, -x as f64)
    } else {
        (1.0, x as f64)
    };
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp()) as f32
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
        ] {
            assert!(
                (erf(x) - want).abs() < 2e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut r = [1.0, 3.0, 2.0, -50.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[1] > r[2] && r[2] > r[0] && r[0] > r[3]);
    }
}
