//! `voxloop converse`, `transcribe` and `say-text`: the speech engines on
//! files, without a server (a module of the binary).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voxloop::config::Config;

use crate::kb_cli::KbDirArgs;
use crate::models_cli::ModelsArgs;

#[derive(Args)]
pub struct ConverseArgs {
    /// Audio files, each said to a fresh conversation.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the (last) reply audio to this WAV file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Give up on a file after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub models: ModelsArgs,
    #[command(flatten)]
    pub kb: KbDirArgs,
}

#[derive(Args)]
pub struct TranscribeArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub models: ModelsArgs,
}

#[derive(Args)]
pub struct SayTextArgs {
    /// The text to speak.
    pub text: String,
    /// Output WAV file.
    #[arg(long, default_value = "say.wav")]
    pub out: PathBuf,
    #[command(flatten)]
    pub models: ModelsArgs,
}

/// `voxloop converse FILE...`: labelled lines per file.
pub async fn converse(config: &Config, args: &ConverseArgs) -> anyhow::Result<()> {
    let deps = voxloop::converse::load(config).await?;
    for f in &args.files {
        let r = voxloop::converse::converse_file(
            &deps,
            f,
            std::time::Duration::from_secs(args.timeout),
        )
        .await?;
        println!("file: {}", f.display());
        println!("transcript: {}", r.transcript.as_deref().unwrap_or(""));
        println!("reply: {}", r.reply.as_deref().unwrap_or(""));
        if config.kb.dir.is_some() {
            let s: Vec<String> = r
                .sources
                .iter()
                .map(|s| format!("{}#{}", s.doc, s.chunk))
                .collect();
            println!("sources: {}", s.join(" "));
        }
        let t = r.timings.as_ref();
        let g = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "timings: endpoint_ms={} asr_ms={} llm_first_token_ms={} first_sentence_ms={} tts_first_audio_ms={} total_ms={} voice_to_voice_ms={} kb_ms={}",
            g(t.map(|t| u64::from(t.endpoint_ms))),
            g(t.map(|t| t.asr_ms)),
            g(t.and_then(|t| t.llm_first_token_ms)),
            g(t.and_then(|t| t.first_sentence_ms)),
            g(t.and_then(|t| t.tts_first_audio_ms)),
            g(t.and_then(|t| t.total_ms)),
            r.voice_to_voice
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "-".into()),
            g(t.and_then(|t| t.kb_ms)),
        );
        if let Some(out) = &args.out {
            voxloop::audio::write_wav(out, &r.reply_audio, voxloop::WIRE_RATE)
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}

/// `voxloop transcribe FILE...`: one `FILE<TAB>text` line per file.
pub async fn transcribe(config: &Config, files: &[PathBuf]) -> anyhow::Result<i32> {
    let asr = voxloop::engines::load_asr(config)?;
    let mut failed = 0;
    for f in files {
        let pcm = match voxloop::audio::decode_file_mono(f, voxloop::PIPELINE_RATE) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        match asr.transcribe(pcm).await {
            Ok(t) => {
                println!("{}\t{}", f.display(), t.text);
                tracing::info!(
                    file = %f.display(),
                    audio_ms = t.audio.as_millis() as u64,
                    asr_ms = t.elapsed.as_millis() as u64,
                    rtf = t.elapsed.as_secs_f64() / t.audio.as_secs_f64().max(1e-9),
                    "transcribed"
                );
            }
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}

/// `voxloop say-text "..." --out x.wav`: the TTS voice to a WAV file.
pub async fn say_text(config: &Config, text: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let tts = voxloop::engines::load_tts(config)?;
    let speech = tts.synthesize(text.to_string()).await?;
    voxloop::audio::write_wav(out, &speech.pcm, speech.sample_rate)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({:.2} s of audio in {:.2} s, real-time factor {:.3})",
        out.display(),
        speech.duration().as_secs_f64(),
        speech.elapsed.as_secs_f64(),
        speech.elapsed.as_secs_f64() / speech.duration().as_secs_f64().max(1e-9)
    );
    Ok(())
}
