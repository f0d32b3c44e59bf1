//! The engine's KV cells: which prompt tokens a sequence can keep, how the
//! rest is prefilled, and the warm-up that prefills a conversation's next
//! prompt while its user is still listening to the last reply.

use llama_cpp_2::token::LlamaToken;

use super::Engine;
use crate::pipeline::llm::chat::ChatMessage;

/// Stands for the next user message when the next prompt is rendered
/// ahead of it: the prompt is cut where this text begins.
const MARK: &str = "VOXLOOP_NEXT_QUESTION";

/// What a warm-up did.
pub(super) enum Warmed {
    /// Prefilled this many tokens (0: they were all cached already, or
    /// there is no slot to spare).
    Tokens(usize),
    /// The conversation's slot is generating: try again after it.
    Later,
}

impl Engine {
    /// Make sequence `i` hold the longest cached prefix of `toks` (at most
    /// `max` tokens), from its own cells or copied from another sequence;
    /// returns that length. Cells past it are dropped.
    pub(super) fn reuse(&mut self, i: usize, toks: &[LlamaToken], max: usize) -> usize {
        let seq = i as i32;
        let common = |cached: &[LlamaToken]| {
            cached
                .iter()
                .zip(toks)
                .take_while(|(a, b)| a == b)
                .count()
                .min(max)
        };
        // KV cells are valid for whatever tokens they hold, whoever put them
        // there: identical tokens give identical cells.
        let mut keep = common(&self.slots[i].cached);
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(i as u32), Some(keep as u32), None)
            .unwrap_or(false);
        if !removed {
            let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
            keep = 0;
        }
        self.slots[i].cached.truncate(keep);
        // Another conversation may hold a longer prefix of this prompt (the
        // shared system prompt, at least): copy its cells instead of
        // decoding them again. With a unified KV cache this is a metadata copy.
        let donor = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, s)| (j, common(&s.cached)))
            .max_by_key(|&(_, n)| n);
        if let Some((j, n)) = donor
            && n > keep
        {
            let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
            if self
                .ctx
                .copy_kv_cache_seq(j as i32, seq, Some(0), Some(n as u32))
                .is_ok()
            {
                self.slots[i].cached = toks[..n].to_vec();
                keep = n;
            } else {
                self.slots[i].cached.clear();
                keep = 0;
            }
        }
        keep
    }

    /// Decode `toks[keep..]` into sequence `i` in `n_batch` chunks. With
    /// `logits`, the last token's logits are kept; returns the next
    /// position and that token's index in the last batch.
    pub(super) fn prefill(
        &mut self,
        i: usize,
        toks: &[LlamaToken],
        keep: usize,
        logits: bool,
    ) -> Result<(i32, i32), String> {
        let seq = i as i32;
        let mut pos = keep as i32;
        let mut last_idx = 0;
        for chunk in toks[keep..].chunks(self.n_batch) {
            self.batch.clear();
            for (j, &t) in chunk.iter().enumerate() {
                let is_last = logits && pos as usize == toks.len() - 1;
                if self.batch.add(t, pos, &[seq], is_last).is_err() {
                    return Err("batch overflow".into());
                }
                if is_last {
                    last_idx = j as i32;
                }
                pos += 1;
            }
            let decoded = {
                let _turn = crate::pipeline::gate::bulk().enter();
                self.ctx.decode(&mut self.batch)
            };
            decoded.map_err(|e| format!("prefill decode: {e}"))?;
            self.slots[i].cached.extend_from_slice(chunk);
        }
        Ok((pos, last_idx))
    }

    /// Forget sequence `i`'s cells (after a failed decode they are unknown).
    pub(super) fn drop_cells(&mut self, i: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        self.slots[i].cached.clear();
        self.slots[i].key = None;
    }

    /// Prefill conversation `key`'s next prompt up to where its next user
    /// message will go (`messages` is its history), and through `so_far`,
    /// the start of that message when the user is still saying it, in its
    /// own slot or a free one, so that the next reply decodes only the
    /// rest of the question. The history ends with a reply whose text was
    /// re-tokenized (or cut), so its tokens differ from the generated ones
    /// the cells hold.
    pub(super) fn warm(&mut self, key: u64, messages: &[ChatMessage], so_far: &str) -> Warmed {
        let own = self.slots.iter().position(|s| s.key == Some(key));
        if own.is_some_and(|i| self.slots[i].active.is_some()) {
            return Warmed::Later;
        }
        let Some(i) = own.or_else(|| self.slots.iter().position(|s| s.key.is_none())) else {
            // Every slot is another conversation's: warming would evict one.
            return Warmed::Tokens(0);
        };
        let toks = match self.prefix_tokens(messages, so_far) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "no LLM warm-up");
                return Warmed::Tokens(0);
            }
        };
        // Room for the question and the reply, or the next prompt drops
        // its oldest turn and this prefix would not be its prefix.
        if toks.is_empty() || toks.len() + 64 > self.opts.max_prompt_tokens {
            return Warmed::Tokens(0);
        }
        self.clock += 1;
        let keep = self.reuse(i, &toks, toks.len());
        let slot = &mut self.slots[i];
        slot.key = Some(key);
        slot.last_used = self.clock;
        match self.prefill(i, &toks, keep, false) {
            Ok(_) => Warmed::Tokens(toks.len() - keep),
            Err(e) => {
                tracing::warn!(error = %e, "LLM warm-up failed");
                self.drop_cells(i);
                Warmed::Tokens(0)
            }
        }
    }

    /// The tokens of `messages` followed by the header of a user message
    /// yet to come and its first words, `so_far`. A word's tokens carry its
    /// leading space, so those of a message's first words are the first
    /// tokens of the whole message (the caller leaves off a last word that
    /// may be cut).
    fn prefix_tokens(
        &self,
        messages: &[ChatMessage],
        so_far: &str,
    ) -> Result<Vec<LlamaToken>, String> {
        let next = ChatMessage::new(crate::pipeline::llm::Role::User, format!("{so_far}{MARK}"));
        let msgs: Vec<&ChatMessage> = messages.iter().chain([&next]).collect();
        let prompt = self.render(&msgs)?;
        // The last one: a user may have said the marker's text before.
        let cut = prompt
            .rfind(MARK)
            .ok_or("the chat template dropped the user message")?;
        Ok(self
            .model
            .vocab()
            .tokenize(&prompt.as_bytes()[..cut], true, true))
    }
}
