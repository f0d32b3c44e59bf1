//! The utterances virtual users speak: a directory with a `transcripts.tsv`
//! (`file<TAB>[voice<TAB>]text`, an optional `file` header line), decoded
//! once to 48 kHz and shared by every user.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngExt;
use rand::rngs::SmallRng;

use super::LoadtestError;

/// One recording and what it says.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// File name as written in `transcripts.tsv`.
    pub name: String,
    /// The reference transcript (for WER).
    pub text: String,
    /// 48 kHz mono.
    pub pcm: Arc<Vec<f32>>,
}

/// The lines of a `transcripts.tsv`: (file, text). The text is the last
/// column, so both `file<TAB>text` and `file<TAB>voice<TAB>text` work.
pub fn parse_tsv(tsv: &str) -> Vec<(String, String)> {
    tsv.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            match cols.as_slice() {
                [file, .., text] if *file != "file" => {
                    Some((file.trim().to_string(), text.trim().to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Load every utterance of `path` that has a voiced sample (a silent clip
/// has no "last voiced sample" to measure latency from). `path` is a
/// directory holding `transcripts.tsv`, or a `.tsv` file; audio file names are
/// relative to the directory the list is in.
pub fn load(path: &Path) -> Result<Vec<Utterance>, LoadtestError> {
    let (dir, tsv_path) = if path.is_file() {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path.to_path_buf(),
        )
    } else {
        (path.to_path_buf(), path.join("transcripts.tsv"))
    };
    let tsv = std::fs::read_to_string(&tsv_path).map_err(|e| LoadtestError::Corpus {
        path: tsv_path.clone(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (file, text) in parse_tsv(&tsv) {
        let path: PathBuf = dir.join(&file);
        let pcm = crate::audio::decode_file_mono(&path, crate::WIRE_RATE).map_err(|e| {
            LoadtestError::Corpus {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        if crate::audio::last_voiced(&pcm).is_none() {
            tracing::warn!(file = %path.display(), "no voiced sample; skipped");
            continue;
        }
        out.push(Utterance {
            name: file,
            text,
            pcm: Arc::new(pcm),
        });
    }
    if out.is_empty() {
        return Err(LoadtestError::Corpus {
            path: tsv_path,
            message: "no usable utterances".into(),
        });
    }
    Ok(out)
}

/// Which of `n` utterances user `user` says in its turn `turn` (from 1):
/// the next in corpus order, starting at the user's own index, or any.
pub fn utterance_index(
    in_order: bool,
    user: usize,
    turn: u32,
    n: usize,
    rng: &mut SmallRng,
) -> usize {
    if in_order {
        (user + turn.max(1) as usize - 1) % n
    } else {
        rng.random_range(0..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tsv_with_and_without_voice_column() {
        let rows = parse_tsv(
            "file\tvoice\ttext\nq01.wav\tslt\tWhat is the capital of France?\n\n# note\nb.wav\tHello there.\r\nbad-line\n",
        );
        assert_eq!(
            rows,
            vec![
                ("q01.wav".into(), "What is the capital of France?".into()),
                ("b.wav".into(), "Hello there.".into()),
            ]
        );
    }

    #[test]
    fn a_directory_or_a_list_file() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let all = load(&data).unwrap();
        let questions = load(&data.join("questions.tsv")).unwrap();
        assert_eq!(all.len(), 12);
        assert_eq!(questions.len(), 10);
        assert!(questions.iter().all(|u| u.name.starts_with('q')));
        assert_eq!(questions[0].text, "What is the capital of France?");
        assert!(!questions[0].pcm.is_empty());
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_file() {
        let err = load(Path::new("/nonexistent-voxloop-dir")).unwrap_err();
        assert!(err.to_string().contains("transcripts.tsv"), "{err}");
    }

    #[test]
    fn utterances_in_order_start_at_the_users_own() {
        let mut rng = SmallRng::seed_from_u64(1);
        // (user, turn) -> index, of 10 utterances
        for (user, turn, want) in [
            (0, 1, 0),
            (0, 2, 1),
            (0, 10, 9),
            (0, 11, 0),
            (1, 1, 1),
            (9, 2, 0),
        ] {
            assert_eq!(
                utterance_index(true, user, turn, 10, &mut rng),
                want,
                "user {user} turn {turn}"
            );
        }
        let picked: std::collections::HashSet<usize> = (1..200)
            .map(|t| utterance_index(false, 0, t, 10, &mut rng))
            .collect();
        assert_eq!(picked.len(), 10, "at random, every utterance comes up");
    }
}
