//! `voxloop converse` runs the speech pipeline on files and prints one
//! labelled line per result, for every shared question.

mod common;

use std::process::Command;

#[test]
fn converse_prints_transcript_reply_and_timings_for_each_question() {
    let mut files: Vec<String> = std::fs::read_dir(common::data(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('q') && n.ends_with(".wav"))
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 10);
    let out_wav = std::env::temp_dir().join(format!("voxloop-converse-{}.wav", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_voxloop"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VOXLOOP_LOG", "warn")
        .args(["converse", "--profile", "fast", "--out"])
        .arg(&out_wav)
        .args(&files)
        .output()
        .expect("run voxloop converse");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |label: &str| stdout.lines().filter(|l| l.starts_with(label)).count();
    assert_eq!(count("transcript: "), 10);
    assert_eq!(count("reply: "), 10);
    assert_eq!(count("timings: "), 10);
    // Every question was understood and answered.
    for line in stdout.lines() {
        if let Some(t) = line.strip_prefix("transcript: ") {
            assert!(!t.trim().is_empty(), "empty transcript");
        }
        if let Some(r) = line.strip_prefix("reply: ") {
            assert!(!r.trim().is_empty(), "empty reply");
        }
        if let Some(t) = line.strip_prefix("timings: ") {
            assert!(t.contains("total_ms=") && !t.contains("total_ms=-"), "{t}");
        }
    }
    let (audio, _) = voxloop::audio::decode_file(&out_wav).expect("reply wav");
    assert!(
        voxloop::audio::first_voiced(&audio).is_some(),
        "silent reply audio"
    );
    std::fs::remove_file(&out_wav).ok();
}
